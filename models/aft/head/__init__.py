"""Train a classification head on your own labelled texts and write a new bundle.

    python -m aft.head train --bundle models/aft-mini --data labels.csv --out my-bundle

See docs/CLASSIFIERS.md. The pieces: data (reading and checking CSV/TSV/JSONL), split
(stratified, related rows kept together), embed (batched encoder runs), fit (linear head),
finetune (optional end-to-end training), metrics, output (bundle writing), train (the steps in
order), debian_sections (the worked example's data).
"""
