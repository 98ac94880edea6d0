//! Model bundles (docs/bundle-format.md): `manifest.json` parsed and checked field by field, and
//! every listed file checked against its size and sha256 before anything is loaded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Device;

use crate::backend::torch::device_name;
use crate::config::Precision;

/// The manifest version this service reads.
pub const FORMAT_VERSION: u64 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const MODEL_FILE: &str = "model.pt";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The method that pools token spans of the whole-sequence pass (late chunking).
pub const EMBED_SPANS: &str = "embed_spans";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}: field `{field}`: {message}")]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },
}

/// Why a bundle cannot be served at the `--precision` asked for.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    #[error(
        "--precision int8: bundle {dir} has no int8 model (its manifest has no `int8_model`); \
         serve it with --precision float (or auto), or add one with \
         `python -m aft.distill.quantize --bundle {dir}`"
    )]
    NoInt8Model { dir: String },
    #[error(
        "--precision int8: bundle {dir}'s int8 model runs on the CPU only (quantized Linear \
         layers have no CUDA kernels), and the device is {device}; use --precision float (or \
         auto) on {device}, or --device cpu"
    )]
    Int8NotOnCpu { dir: String, device: String },
}

/// The precision a bundle's model is served at, as `/info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServedPrecision {
    /// `model.pt` (parameters run in float32).
    Float,
    /// The bundle's int8 copy (manifest `int8_model`): int8 dynamically quantized Linear layers.
    Int8,
}

impl ServedPrecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for ServedPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one rule behind `--precision`: `auto` is int8 where a bundle with an int8 copy runs on
/// the CPU (its quantized Linear layers have no CUDA kernels), float elsewhere; `float` always
/// holds; `int8` needs both, and `None` says it cannot be had.
pub fn choose_precision(
    requested: Precision,
    has_int8: bool,
    on_cpu: bool,
) -> Option<ServedPrecision> {
    match requested {
        Precision::Float => Some(ServedPrecision::Float),
        Precision::Auto if has_int8 && on_cpu => Some(ServedPrecision::Int8),
        Precision::Auto => Some(ServedPrecision::Float),
        Precision::Int8 => (has_int8 && on_cpu).then_some(ServedPrecision::Int8),
    }
}

/// `manifest.json`, as docs/bundle-format.md defines it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The encoder's hyper-parameters; kept verbatim for `/info`.
    pub model: serde_json::Map<String, serde_json::Value>,
    pub embedding_dim: usize,
    pub max_seq_len: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub pad_token_id: u32,
    pub dtype: Dtype,
    pub labels: Option<Vec<String>>,
    /// TorchScript methods the module exports beyond `forward` (e.g. `embed_spans`); absent in
    /// bundles written before there were any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The bundle's int8 copy of `model.pt` (a file listed in `files`), served on CPU by
    /// `--precision auto` and `int8`; `None` without one.
    #[serde(default)]
    pub int8_model: Option<String>,
    pub files: BTreeMap<String, FileEntry>,
    pub torch_version: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Float16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// A validated bundle: the manifest, where its files are, and the precision it is served at
/// (float from [`Bundle::load`]; [`Bundle::with_precision`] chooses).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    precision: ServedPrecision,
}

impl Manifest {
    /// The encoder's variant (`model.variant`), or "unknown" when the manifest does not say.
    pub fn variant(&self) -> &str {
        self.model
            .get("variant")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
    }

    /// The encoder's vocabulary size (`model.vocab_size`), when the manifest gives one.
    pub fn vocab_size(&self) -> Option<usize> {
        self.model
            .get("vocab_size")
            .and_then(|v| v.as_u64())
            .and_then(|v| usize::try_from(v).ok())
    }

    /// Whether `model.pt` exports the TorchScript method `name` (besides `forward`).
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.iter().any(|m| m == name)
    }

    /// Classifier labels; empty without a head.
    pub fn labels(&self) -> &[String] {
        self.labels.as_deref().unwrap_or(&[])
    }
}

impl Bundle {
    /// Reads and validates `dir/manifest.json` and checks every file it lists.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&manifest_path).map_err(|source| BundleError::Io {
            file: manifest_path.clone(),
            source,
        })?;
        let manifest = parse_manifest(&manifest_path, &text)?;
        let bundle = Bundle {
            dir,
            manifest,
            precision: ServedPrecision::Float,
        };
        bundle.verify_files()?;
        Ok(bundle)
    }

    /// The bundle served at the precision `requested` on `device` ([`choose_precision`]); an
    /// error names the bundle and the device, and says what to do instead.
    pub fn with_precision(
        mut self,
        requested: Precision,
        device: Device,
    ) -> Result<Self, PrecisionError> {
        let has_int8 = self.manifest.int8_model.is_some();
        let on_cpu = device == Device::Cpu;
        self.precision = choose_precision(requested, has_int8, on_cpu).ok_or_else(|| {
            let dir = self.dir.display().to_string();
            if has_int8 {
                PrecisionError::Int8NotOnCpu {
                    dir,
                    device: device_name(device),
                }
            } else {
                PrecisionError::NoInt8Model { dir }
            }
        })?;
        Ok(self)
    }

    /// The precision the model is served at.
    pub fn precision(&self) -> ServedPrecision {
        self.precision
    }

    /// The bundle file that holds the model at its precision: `model.pt`, or the int8 copy.
    pub fn model_file(&self) -> &str {
        match (self.precision, &self.manifest.int8_model) {
            (ServedPrecision::Int8, Some(file)) => file,
            // with_precision never chooses int8 for a bundle without an int8 copy.
            _ => MODEL_FILE,
        }
    }

    /// Where the served model file is ([`Bundle::model_file`]).
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(self.model_file())
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }

    fn verify_files(&self) -> Result<(), BundleError> {
        let manifest_path = self.dir.join(MANIFEST_FILE);
        for (name, entry) in &self.manifest.files {
            let field = format!("files.{name}");
            // Names are bundle-relative; refuse anything that could leave the directory.
            let plain = Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || name.is_empty() {
                return Err(field_error(
                    &manifest_path,
                    &field,
                    "not a plain relative file name",
                ));
            }
            let path = self.dir.join(name);
            let (size, digest) = hash_file(&path)?;
            if size != entry.size {
                return Err(field_error(
                    &manifest_path,
                    &format!("{field}.size"),
                    format!(
                        "{} is {size} bytes, the manifest says {}",
                        path.display(),
                        entry.size
                    ),
                ));
            }
            if !digest.eq_ignore_ascii_case(&entry.sha256) {
                return Err(field_error(
                    &manifest_path,
                    &format!("{field}.sha256"),
                    format!(
                        "{} has sha256 {digest}, the manifest says {}",
                        path.display(),
                        entry.sha256
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn field_error(file: &Path, field: &str, message: impl Into<String>) -> BundleError {
    BundleError::Field {
        file: file.to_path_buf(),
        field: field.to_string(),
        message: message.into(),
    }
}

fn parse_manifest(path: &Path, text: &[u8]) -> Result<Manifest, BundleError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        // A missing field is reported at its parent; name the field itself.
        let message = inner.to_string();
        let field = missing_field(&message)
            .map(|m| {
                if field == "." {
                    m.to_string()
                } else {
                    format!("{field}.{m}")
                }
            })
            .unwrap_or(field);
        field_error(path, &field, message)
    })?;
    validate(path, &manifest)?;
    Ok(manifest)
}

/// serde reports "missing field `x` at line..": pull out `x`.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn validate(path: &Path, m: &Manifest) -> Result<(), BundleError> {
    if m.format_version != FORMAT_VERSION {
        return Err(field_error(
            path,
            "format_version",
            format!(
                "version {} is not supported (this service reads {FORMAT_VERSION})",
                m.format_version
            ),
        ));
    }
    if m.name.trim().is_empty() {
        return Err(field_error(path, "name", "must not be empty"));
    }
    if m.embedding_dim == 0 {
        return Err(field_error(path, "embedding_dim", "must be at least 1"));
    }
    if m.max_seq_len < 2 {
        return Err(field_error(path, "max_seq_len", "must be at least 2"));
    }
    if let Some(labels) = &m.labels {
        if labels.is_empty() {
            return Err(field_error(
                path,
                "labels",
                "must be null or a non-empty list",
            ));
        }
    }
    if let Some(vocab) = m.vocab_size() {
        if m.pad_token_id as usize >= vocab {
            return Err(field_error(
                path,
                "pad_token_id",
                format!(
                    "{} is outside the vocabulary (model.vocab_size = {vocab})",
                    m.pad_token_id
                ),
            ));
        }
    }
    for required in [MODEL_FILE, TOKENIZER_FILE] {
        if !m.files.contains_key(required) {
            return Err(field_error(path, &format!("files.{required}"), "missing"));
        }
    }
    if let Some(int8) = &m.int8_model {
        // Listed, so that verify_files checks its size and sha256 as it checks model.pt's.
        if int8 == MODEL_FILE || !m.files.contains_key(int8) {
            return Err(field_error(
                path,
                "int8_model",
                format!("{int8:?} is not a file listed in `files` other than {MODEL_FILE}"),
            ));
        }
    }
    for (name, entry) in &m.files {
        let valid = entry.sha256.len() == 64 && entry.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(field_error(
                path,
                &format!("files.{name}.sha256"),
                "not 64 hex digits",
            ));
        }
    }
    Ok(())
}

/// Size and lowercase hex sha256 of a file, streamed.
fn hash_file(path: &Path) -> Result<(u64, String), BundleError> {
    let io_err = |source| BundleError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(dir: &Path, manifest: serde_json::Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("model.pt"), b"model").unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn good_manifest() -> serde_json::Value {
        serde_json::json!({
            "format_version": 1, "name": "t", "description": "d",
            "model": {"variant": "local", "vocab_size": 100},
            "embedding_dim": 8, "max_seq_len": 16, "pooling": "mean", "normalize": true,
            "pad_token_id": 0, "dtype": "float32", "labels": null,
            "files": {
                "model.pt": {"sha256": sha(b"model"), "size": 5},
                "tokenizer.json": {"sha256": sha(b"{}"), "size": 2}
            },
            "torch_version": "2.13.0", "created_at": "2026-01-01T00:00:00Z"
        })
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aft-bundle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn error_for(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let dir = temp_dir(name);
        let mut m = good_manifest();
        edit(&mut m);
        write_bundle(&dir, m);
        let err = Bundle::load(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        err
    }

    #[test]
    fn loads_a_valid_bundle() {
        let dir = temp_dir("ok");
        write_bundle(&dir, good_manifest());
        let bundle = Bundle::load(&dir).unwrap();
        assert_eq!(bundle.manifest.embedding_dim, 8);
        assert_eq!(bundle.manifest.variant(), "local");
        assert_eq!(bundle.manifest.vocab_size(), Some(100));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = error_for("version", |m| m["format_version"] = 2.into());
        assert!(
            err.contains("manifest.json") && err.contains("`format_version`"),
            "{err}"
        );
        let err = error_for("missing", |m| {
            m.as_object_mut().unwrap().remove("embedding_dim");
        });
        assert!(err.contains("`embedding_dim`"), "{err}");
        let err = error_for("type", |m| m["max_seq_len"] = "long".into());
        assert!(err.contains("`max_seq_len`"), "{err}");
        let err = error_for("pooling", |m| m["pooling"] = "max".into());
        assert!(err.contains("`pooling`"), "{err}");
        let err = error_for("hash", |m| {
            m["files"]["model.pt"]["sha256"] = sha(b"other").into()
        });
        assert!(err.contains("`files.model.pt.sha256`"), "{err}");
        let err = error_for("size", |m| m["files"]["tokenizer.json"]["size"] = 3.into());
        assert!(err.contains("`files.tokenizer.json.size`"), "{err}");
        let err = error_for("escape", |m| {
            m["files"]["../x"] = serde_json::json!({"sha256": sha(b""), "size": 0})
        });
        assert!(err.contains("`files.../x`"), "{err}");
        let err = error_for("nomodel", |m| {
            m["files"].as_object_mut().unwrap().remove("model.pt");
        });
        assert!(err.contains("`files.model.pt`"), "{err}");
    }

    /// docs/manifest.schema.json is the one definition of the manifest (the Python exporter and
    /// reader validate against it): this type reads exactly its fields, needs exactly the ones it
    /// requires, gives absent ones the schema's defaults and takes every value of its enums.
    #[test]
    fn the_manifest_type_follows_the_schema() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifest.schema.json");
        let text = std::fs::read_to_string(&path).expect("the schema is readable");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
        let properties = schema["properties"].as_object().expect("properties");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let mut full = good_manifest();
        full["methods"] = serde_json::json!([EMBED_SPANS]);
        full["int8_model"] = "model-int8.pt".into();
        full["files"]["model-int8.pt"] = full["files"]["model.pt"].clone();
        let read = |m: serde_json::Value| serde_json::from_value::<Manifest>(m);
        let written = serde_json::to_value(read(full.clone()).unwrap()).unwrap();
        let mut fields: Vec<&String> = written.as_object().unwrap().keys().collect();
        let mut documented: Vec<&String> = properties.keys().collect();
        fields.sort();
        documented.sort();
        assert_eq!(fields, documented);
        for (field, rule) in properties {
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove(field);
            match read(without) {
                Ok(m) => {
                    assert!(!required.contains(&field.as_str()), "{field}: required");
                    let value = &serde_json::to_value(m).unwrap()[field];
                    assert_eq!(Some(value), rule.get("default"), "{field}: default");
                }
                Err(err) => assert!(required.contains(&field.as_str()), "{field}: {err}"),
            }
            for value in rule["enum"].as_array().into_iter().flatten() {
                let mut m = full.clone();
                m[field] = value.clone();
                let back = serde_json::to_value(read(m).unwrap()).unwrap();
                assert_eq!(&back[field], value, "{field}");
            }
        }
    }

    #[test]
    fn int8_model_names_a_listed_file_that_is_checked() {
        let dir = temp_dir("int8");
        let mut m = good_manifest();
        m["int8_model"] = "model-int8.pt".into();
        m["files"]["model-int8.pt"] = serde_json::json!({"sha256": sha(b"int8"), "size": 4});
        write_bundle(&dir, m.clone());
        std::fs::write(dir.join("model-int8.pt"), b"int8").unwrap();
        let bundle = Bundle::load(&dir).unwrap();
        assert_eq!(bundle.manifest.int8_model.as_deref(), Some("model-int8.pt"));
        // Served in float until a precision is chosen; int8 on the CPU is the int8 file.
        assert_eq!(bundle.model_path(), dir.join("model.pt"));
        let int8 = bundle.with_precision(Precision::Int8, Device::Cpu).unwrap();
        assert_eq!(int8.precision(), ServedPrecision::Int8);
        assert_eq!(int8.model_path(), dir.join("model-int8.pt"));
        // Its sha256 and size are checked like model.pt's.
        std::fs::write(dir.join("model-int8.pt"), b"INT8").unwrap();
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(err.contains("`files.model-int8.pt.sha256`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        for (value, name) in [("model.pt", "int8self"), ("absent.pt", "int8absent")] {
            let err = error_for(name, |m| m["int8_model"] = value.into());
            assert!(err.contains("`int8_model`") && err.contains(value), "{err}");
        }
    }

    /// Every `--precision` on a CPU and a CUDA device, with and without an int8 copy.
    #[test]
    fn precision_resolves_by_request_device_and_int8_copy() {
        use ServedPrecision::{Float, Int8};
        let cases = [
            // (requested, has int8, on cpu) -> served, None = start-up error
            (Precision::Auto, true, true, Some(Int8)),
            (Precision::Auto, true, false, Some(Float)),
            (Precision::Auto, false, true, Some(Float)),
            (Precision::Auto, false, false, Some(Float)),
            (Precision::Float, true, true, Some(Float)),
            (Precision::Float, true, false, Some(Float)),
            (Precision::Float, false, true, Some(Float)),
            (Precision::Float, false, false, Some(Float)),
            (Precision::Int8, true, true, Some(Int8)),
            (Precision::Int8, true, false, None),
            (Precision::Int8, false, true, None),
            (Precision::Int8, false, false, None),
        ];
        for (requested, has_int8, on_cpu, want) in cases {
            let got = choose_precision(requested, has_int8, on_cpu);
            assert_eq!(
                got, want,
                "{requested:?}, int8 copy {has_int8}, cpu {on_cpu}"
            );
        }
    }

    /// The errors name the bundle and the device and say what to do; no files are needed.
    #[test]
    fn precision_errors_name_the_bundle_and_the_device() {
        let manifest = |int8: bool| {
            let mut m = good_manifest();
            if int8 {
                m["int8_model"] = "model-int8.pt".into();
            }
            serde_json::from_value::<Manifest>(m).unwrap()
        };
        let bundle = |int8: bool| Bundle {
            dir: PathBuf::from("/srv/my-bundle"),
            manifest: manifest(int8),
            precision: ServedPrecision::Float,
        };
        let cuda = Device::Cuda(1);
        let served = |int8, requested, device| {
            bundle(int8)
                .with_precision(requested, device)
                .map(|b| (b.precision(), b.model_file().to_owned()))
        };
        let int8 = (ServedPrecision::Int8, "model-int8.pt".to_owned());
        let float = (ServedPrecision::Float, MODEL_FILE.to_owned());
        assert_eq!(served(true, Precision::Auto, Device::Cpu), Ok(int8));
        assert_eq!(served(true, Precision::Auto, cuda), Ok(float.clone()));
        assert_eq!(served(false, Precision::Auto, Device::Cpu), Ok(float));
        let err = served(false, Precision::Int8, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/srv/my-bundle") && err.contains("no int8 model"),
            "{err}"
        );
        assert!(err.contains("--precision float"), "{err}");
        let err = served(true, Precision::Int8, cuda).unwrap_err().to_string();
        assert!(
            err.contains("/srv/my-bundle") && err.contains("cuda:1") && err.contains("CPU only"),
            "{err}"
        );
    }

    #[test]
    fn missing_manifest_names_the_file() {
        let dir = temp_dir("absent");
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }
}
