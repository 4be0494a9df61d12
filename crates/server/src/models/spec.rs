//! What a served model is: its file and the server settings it overrides ([`ModelSpec`]), from
//! the command line or from a `--models` TOML file ([`read_models_file`]).

use crate::{KvType, ReasoningFormat, ServerConfig, ServerError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One model of a server: where its file is, the names clients use for it, and the settings
/// it sets itself (`None`: the server's flag).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSpec {
    /// The model file (a reference the caller has already resolved to a local path).
    pub model: PathBuf,
    /// Names clients may use in `model`; the first is the one responses carry (default:
    /// [`default_name`]).
    pub aliases: Vec<String>,
    pub ctx_size: Option<usize>,
    pub threads: Option<usize>,
    pub kv_type: Option<KvType>,
    /// The source of a Jinja chat template to use instead of the model's own.
    pub chat_template: Option<String>,
    pub reasoning_format: Option<ReasoningFormat>,
    /// Loaded at startup and never unloaded to make room for another model.
    pub pinned: bool,
}

impl ModelSpec {
    pub fn new(model: PathBuf) -> ModelSpec {
        ModelSpec {
            model,
            ..ModelSpec::default()
        }
    }

    /// Every name the model answers to: its aliases, or [`default_name`].
    pub fn names(&self) -> Vec<String> {
        if !self.aliases.is_empty() {
            return self.aliases.clone();
        }
        vec![default_name(&self.model)]
    }

    /// The server's settings with this model's own applied: what its engine, template and
    /// answers use.
    pub fn settings(&self, server: &ServerConfig) -> ServerConfig {
        let mut cfg = server.clone();
        cfg.model.clone_from(&self.model);
        cfg.model_aliases = self.names();
        cfg.ctx_size = self.ctx_size.or(server.ctx_size);
        cfg.threads = self.threads.or(server.threads);
        cfg.kv_type = self.kv_type.unwrap_or(server.kv_type);
        if self.chat_template.is_some() {
            cfg.chat_template.clone_from(&self.chat_template);
        }
        cfg.reasoning_format = self.reasoning_format.unwrap_or(server.reasoning_format);
        cfg.models = Vec::new();
        cfg
    }
}

/// One `[[model]]` of a `--models` file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    model: String,
    #[serde(default)]
    aliases: Vec<String>,
    ctx_size: Option<usize>,
    threads: Option<usize>,
    kv_type: Option<String>,
    chat_template: Option<PathBuf>,
    reasoning_format: Option<String>,
    #[serde(default)]
    pinned: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    model: Vec<ModelEntry>,
}

/// Reads a `--models` file: a TOML list of `[[model]]` tables with `model` (a reference:
/// `resolve` turns it into a local path), and optionally `aliases`, `ctx_size`, `threads`,
/// `kv_type`, `chat_template` (a file), `reasoning_format` (`deepseek` or `none`) and `pinned`.
/// Unknown keys, a missing file and bad values are errors naming the file.
pub fn read_models_file(
    path: &Path,
    resolve: impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<Vec<ModelSpec>, ServerError> {
    let bad = |msg: String| ServerError::Config(format!("{}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let file: ModelsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if file.model.is_empty() {
        return Err(bad("lists no [[model]]".into()));
    }
    file.model
        .into_iter()
        .enumerate()
        .map(|(i, e)| entry_spec(e, &resolve).map_err(|m| bad(format!("model {}: {m}", i + 1))))
        .collect()
}

/// A file's entry as a spec: its reference resolved, its template read, its values checked.
fn entry_spec(
    e: ModelEntry,
    resolve: &impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<ModelSpec, String> {
    let kv_type = e
        .kv_type
        .map(|t| t.parse::<KvType>().map_err(|err| format!("kv_type: {err}")))
        .transpose()?;
    let reasoning_format = match e.reasoning_format.as_deref() {
        None => None,
        Some("deepseek") => Some(ReasoningFormat::Deepseek),
        Some("none") => Some(ReasoningFormat::Raw),
        Some(other) => {
            return Err(format!(
                "reasoning_format '{other}' is neither 'deepseek' nor 'none'"
            ))
        }
    };
    let chat_template = e
        .chat_template
        .map(|p| {
            std::fs::read_to_string(&p)
                .map_err(|err| format!("chat_template {}: {err}", p.display()))
        })
        .transpose()?;
    if e.aliases.iter().any(|a| a.trim().is_empty()) {
        return Err("an alias is empty".into());
    }
    if e.ctx_size == Some(0) || e.threads == Some(0) {
        return Err("ctx_size and threads must be at least 1".into());
    }
    Ok(ModelSpec {
        model: resolve(&e.model).map_err(|err| format!("{}: {err}", e.model))?,
        aliases: e.aliases,
        ctx_size: e.ctx_size,
        threads: e.threads,
        kv_type,
        chat_template,
        reasoning_format,
        pinned: e.pinned,
    })
}

/// The name a model is served under when it has no alias: the file name without extension (a
/// split set's name without `-0000K-of-0000N`), or a checkpoint folder's name (`ORG/REPO` for a
/// Hugging Face cache snapshot, whose folder is named by a commit).
pub fn default_name(model: &std::path::Path) -> String {
    let file_name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if model.is_dir() {
        let parent = model.parent();
        let repo = parent
            .filter(|p| file_name(p).as_deref() == Some("snapshots"))
            .and_then(|p| file_name(p.parent()?))
            .and_then(|r| Some(r.strip_prefix("models--")?.replacen("--", "/", 1)));
        return repo.or_else(|| file_name(model)).unwrap_or("model".into());
    }
    let name = file_name(model).unwrap_or_default();
    if let Some(part) = frugal_formats::split_part(&name) {
        return part.prefix;
    }
    let stem = model.file_stem();
    stem.map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("frugal-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read(path: &Path) -> Result<Vec<ModelSpec>, ServerError> {
        read_models_file(path, |r| Ok(PathBuf::from(r)))
    }

    #[test]
    fn a_models_file_lists_models_with_their_own_settings() {
        let path = write(
            "valid.toml",
            r#"
            [[model]]
            model = "a.gguf"
            aliases = ["small", "fast"]
            ctx_size = 512
            threads = 2
            kv_type = "q8_0"
            reasoning_format = "none"
            pinned = true

            [[model]]
            model = "b.gguf"
            "#,
        );
        let specs = read(&path).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].names(), ["small", "fast"]);
        assert_eq!(specs[0].kv_type, Some(KvType::Q8_0));
        assert_eq!(specs[0].reasoning_format, Some(ReasoningFormat::Raw));
        assert!(specs[0].pinned && !specs[1].pinned);
        assert_eq!(specs[1].names(), ["b"]);
        // What a model leaves out is the server's.
        let mut server = ServerConfig::new("unused".into());
        server.ctx_size = Some(2048);
        server.threads = Some(8);
        let b = specs[1].settings(&server);
        assert_eq!(
            (b.ctx_size, b.threads, b.kv_type),
            (Some(2048), Some(8), KvType::F16)
        );
        let a = specs[0].settings(&server);
        assert_eq!(
            (a.ctx_size, a.threads, a.kv_type),
            (Some(512), Some(2), KvType::Q8_0)
        );
        assert_eq!(a.model, PathBuf::from("a.gguf"));
    }

    #[test]
    fn bad_models_files_are_errors_naming_the_file_and_the_key() {
        let unknown = write(
            "unknown.toml",
            "[[model]]\nmodel = \"a.gguf\"\ncontext = 5\n",
        );
        let e = read(&unknown).unwrap_err().to_string();
        assert!(e.contains("unknown.toml") && e.contains("context"), "{e}");
        let missing = std::env::temp_dir().join("frugal-no-such-models-file.toml");
        let e = read(&missing).unwrap_err().to_string();
        assert!(
            e.contains("frugal-no-such-models-file.toml") && e.contains("cannot read"),
            "{e}"
        );
        let empty = write("empty.toml", "model = []\n");
        assert!(read(&empty)
            .unwrap_err()
            .to_string()
            .contains("no [[model]]"));
        let kv = write(
            "kv.toml",
            "[[model]]\nmodel = \"a.gguf\"\nkv_type = \"q3\"\n",
        );
        let e = read(&kv).unwrap_err().to_string();
        assert!(e.contains("kv.toml") && e.contains("kv_type"), "{e}");
        let template = write(
            "tpl.toml",
            "[[model]]\nmodel = \"a.gguf\"\nchat_template = \"/no/such.jinja\"\n",
        );
        let e = read(&template).unwrap_err().to_string();
        assert!(e.contains("/no/such.jinja"), "{e}");
        let failing = read_models_file(&kv, |_| Err("not found".into()));
        assert!(failing.is_err());
    }

    #[test]
    fn default_names_drop_split_suffixes_and_name_hub_snapshots_by_repo() {
        use super::default_name;
        use std::path::Path;
        assert_eq!(default_name(Path::new("/m/qwen2-Q4_0.gguf")), "qwen2-Q4_0");
        assert_eq!(
            default_name(Path::new("/m/GLM-4.5-Q4_K_M-00002-of-00003.gguf")),
            "GLM-4.5-Q4_K_M"
        );
        let dir = std::env::temp_dir().join(format!("frugal-names-{}", std::process::id()));
        let snapshot = dir.join("models--Qwen--Qwen3-0.6B/snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        assert_eq!(default_name(&snapshot), "Qwen/Qwen3-0.6B");
        assert_eq!(
            default_name(&dir.join("models--Qwen--Qwen3-0.6B")),
            "models--Qwen--Qwen3-0.6B"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
