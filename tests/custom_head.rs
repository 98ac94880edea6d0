//! A classifier trained with `python -m aft.head train` on a small generated data set, over the
//! tiny fixture's encoder, loads in the real server unchanged: `/v1/classify` answers with the
//! new labels and the predictions the trainer reported; the encoder itself is untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::json;

const TOPICS: [(&str, [&str; 8]); 3] = [
    (
        "cooking",
        [
            "bake", "oven", "recipe", "flour", "soup", "salt", "butter", "knead",
        ],
    ),
    (
        "sport",
        [
            "goal", "match", "team", "score", "ball", "coach", "league", "pitch",
        ],
    ),
    (
        "weather",
        [
            "rain", "sunny", "cloud", "storm", "wind", "snow", "forecast", "fog",
        ],
    ),
];
const PER_LABEL: usize = 16;

/// The trained bundle and the trainer's held-out predictions: (text, true label, predicted).
struct Trained {
    bundle: PathBuf,
    held_out: Vec<(String, String, String)>,
}

/// Rows of six topic words each, picked by a fixed arithmetic sequence (no randomness).
fn dataset_csv() -> String {
    let mut csv = String::from("text,label\n");
    for (t, (label, words)) in TOPICS.iter().enumerate() {
        for row in 0..PER_LABEL {
            let text: Vec<&str> = (0..6)
                .map(|k| words[(row * 5 + k * (row % 3 + 1) + t) % words.len()])
                .collect();
            csv.push_str(&format!("{},{label}\n", text.join(" ")));
        }
    }
    csv
}

/// Trains once for every test in this file (the trainer takes seconds, not milliseconds).
fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let dir = tempdir("custom-head");
        let data = dir.join("topics.csv");
        std::fs::write(&data, dataset_csv()).unwrap();
        let bundle = dir.join("topics-bundle");
        let predictions = dir.join("predictions.csv");
        let out = Command::new(python())
            .current_dir(repo().join("models"))
            .args(["-m", "aft.head", "train", "--bundle"])
            .arg(tiny())
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&bundle)
            .arg("--predictions")
            .arg(&predictions)
            .args(["--name", "topics", "--threads", "1", "--quiet"])
            .output()
            .expect("run python -m aft.head");
        assert!(
            out.status.success(),
            "aft.head train failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("majority baseline"), "{stdout}");
        Trained {
            held_out: read_predictions(&predictions),
            bundle,
        }
    })
}

/// line,label,predicted,confidence,text; the generated texts hold no commas or quotes.
fn read_predictions(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("line,label,predicted,confidence,text"),
        "{text}"
    );
    let rows: Vec<_> = lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ',').collect();
            assert_eq!(f.len(), 5, "{l}");
            (f[4].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    assert!(!rows.is_empty(), "no held-out rows in {text}");
    rows
}

fn sorted_labels() -> Vec<String> {
    let mut labels: Vec<String> = TOPICS.iter().map(|(l, _)| l.to_string()).collect();
    labels.sort();
    labels
}

#[tokio::test]
async fn the_server_loads_the_trained_bundle_and_classifies_with_its_labels() {
    let trained = trained();
    let server = Server::start_bundle(&trained.bundle, FAST).await;

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200, "{info}");
    let labels: Vec<String> = serde_json::from_value(info["labels"].clone()).unwrap();
    assert_eq!(labels, sorted_labels());
    let (_, models) = server.get("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "topics", "{models}");

    let texts: Vec<&str> = trained
        .held_out
        .iter()
        .map(|(t, _, _)| t.as_str())
        .collect();
    let (status, body) = server
        .post("/v1/classify", &json!({"inputs": texts, "top_k": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "topics");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), texts.len());
    let mut correct = 0;
    for ((text, truth, predicted), result) in trained.held_out.iter().zip(results) {
        let top = result.as_array().unwrap();
        let mut got: Vec<String> = top
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_owned())
            .collect();
        // The served top-1 is what the trainer scored; all three labels come back.
        assert_eq!(&got[0], predicted, "{text:?}: {result}");
        got.sort();
        assert_eq!(got, sorted_labels());
        let total: f64 = top.iter().map(|t| t["score"].as_f64().unwrap()).sum();
        assert!(
            (total - 1.0).abs() < 1e-4,
            "softmax over all labels: {result}"
        );
        correct += usize::from(predicted == truth);
    }
    // Three balanced topics: the majority baseline gets a third right.
    assert!(
        correct * 3 > texts.len() * 2,
        "{correct} of {} held-out texts right",
        texts.len()
    );
}

#[tokio::test]
async fn the_trained_bundle_keeps_the_base_encoders_embeddings() {
    let trained = trained();
    let server = Server::start_bundle(&trained.bundle, FAST).await;
    let texts = sample_texts();
    let base = reference(&tiny(), &texts);
    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": texts, "normalize": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, (got, want)) in body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&base.embeddings)
        .enumerate()
    {
        let err = relative_error(&as_vec(got), want);
        assert!(err <= 1e-4, "text {i}: {err:e} from the base encoder");
    }
}
