//! Parsing a model reference: a local path, or a Hub repository with a quant tag or a file name,
//! and an optional revision.

use std::path::{Path, PathBuf};

/// A model as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A file or folder that exists here.
    Local(PathBuf),
    Hub(HubRef),
}

/// A Hugging Face Hub reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// Which file(s) of the repository.
    pub file: RepoFile,
    /// A branch, tag or commit (`main` when not given).
    pub revision: String,
}

/// Which files of a repository a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoFile {
    /// The GGUF file (or split set) whose name carries this quant tag (`Q4_K_M` by default);
    /// matched case-insensitively.
    Quant(String),
    /// This file (a path inside the repository).
    Path(String),
}

/// The quant a repository reference without a tag picks, as Ollama and llama.cpp's `-hf` do.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("'{0}' is neither a file here nor a Hub reference (ORG/REPO[:QUANT][@REVISION] or ORG/REPO/FILE.gguf[@REVISION])")]
    Invalid(String),
    #[error("'{reference}': {why}")]
    BadPart { reference: String, why: String },
}

impl ModelRef {
    /// Parses `text`; a path that exists is always local, so a file named like a repository is
    /// never fetched.
    pub fn parse(text: &str) -> Result<ModelRef, RefError> {
        let path = Path::new(text);
        if path.exists() {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        if looks_local(text) {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        HubRef::parse(text).map(ModelRef::Hub)
    }
}

/// A path the user clearly meant as one (absolute, relative with `./` or `../`, `~`, or a bare
/// `.gguf` file name), even if it does not exist: it then fails as a missing file, not as a Hub
/// lookup.
fn looks_local(text: &str) -> bool {
    text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text.starts_with('~')
        || (!text.contains('/') && text.to_ascii_lowercase().ends_with(".gguf"))
}

impl HubRef {
    /// `ORG/REPO[:QUANT][@REVISION]` or `ORG/REPO/PATH[@REVISION]`.
    pub fn parse(text: &str) -> Result<HubRef, RefError> {
        let bad = |why: &str| RefError::BadPart {
            reference: text.to_string(),
            why: why.to_string(),
        };
        let (rest, revision) = match text.rsplit_once('@') {
            Some((_, "")) => return Err(bad("the revision after '@' is empty")),
            Some((rest, rev)) => (rest, rev.to_string()),
            None => (text, "main".to_string()),
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(org), Some(repo_tag)) = (parts.next(), parts.next()) else {
            return Err(RefError::Invalid(text.to_string()));
        };
        let file = parts.next();
        let (repo, tag) = match (repo_tag.split_once(':'), file) {
            (Some(_), Some(_)) => return Err(bad("give either ':QUANT' or a file path, not both")),
            (Some((repo, tag)), None) => (repo, Some(tag)),
            (None, _) => (repo_tag, None),
        };
        for (what, part) in [("organisation", org), ("repository", repo)] {
            if !valid_name(part) {
                return Err(bad(&format!(
                    "the {what} name '{part}' is not a Hub name (letters, digits, '-', '_', '.')"
                )));
            }
        }
        let file = match (tag, file) {
            (Some(""), _) => return Err(bad("the quant after ':' is empty")),
            (Some(tag), _) => RepoFile::Quant(tag.to_string()),
            (None, Some(path))
                if !path.is_empty() && !path.split('/').any(|p| p == ".." || p.is_empty()) =>
            {
                RepoFile::Path(path.to_string())
            }
            (None, Some(_)) => return Err(bad("the file path is empty or leaves the repository")),
            (None, None) => RepoFile::Quant(DEFAULT_QUANT.to_string()),
        };
        Ok(HubRef {
            repo: format!("{org}/{repo}"),
            file,
            revision,
        })
    }
}

/// A Hub organisation or repository name: letters, digits, `-`, `_`, `.`, not starting with a
/// dot and at most 96 characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(text: &str) -> HubRef {
        match ModelRef::parse(text).unwrap() {
            ModelRef::Hub(h) => h,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn repository_references_with_tags_files_and_revisions() {
        let h = hub("Qwen/Qwen3-8B-GGUF:q4_k_m");
        assert_eq!(h.repo, "Qwen/Qwen3-8B-GGUF");
        assert_eq!(h.file, RepoFile::Quant("q4_k_m".into()));
        assert_eq!(h.revision, "main");
        let h = hub("Qwen/Qwen3-8B-GGUF");
        assert_eq!(h.file, RepoFile::Quant(DEFAULT_QUANT.into()));
        let h = hub("unsloth/GLM-4.5-Air-GGUF/Q4_K_M/GLM-4.5-Air-Q4_K_M-00001-of-00002.gguf@v1.0");
        assert_eq!(h.repo, "unsloth/GLM-4.5-Air-GGUF");
        assert_eq!(
            h.file,
            RepoFile::Path("Q4_K_M/GLM-4.5-Air-Q4_K_M-00001-of-00002.gguf".into())
        );
        assert_eq!(h.revision, "v1.0");
        assert_eq!(hub("a/b:Q8_0@abc123").revision, "abc123");
    }

    #[test]
    fn existing_and_path_like_references_are_local() {
        let here = std::env::current_dir().unwrap();
        let me = here.join("Cargo.toml");
        assert_eq!(
            ModelRef::parse(me.to_str().unwrap()).unwrap(),
            ModelRef::Local(me.clone())
        );
        for text in [
            "./missing/model.gguf",
            "/nope/x.gguf",
            "model.gguf",
            "../a/b",
        ] {
            assert!(
                matches!(ModelRef::parse(text).unwrap(), ModelRef::Local(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        assert!(matches!(
            ModelRef::parse("justaname"),
            Err(RefError::Invalid(_))
        ));
        for (text, needle) in [
            ("a/b:", "quant"),
            ("a/b@", "revision"),
            ("a/b:Q4/file.gguf", "either"),
            ("a/b/../../etc/passwd", "leaves"),
            ("a b/c", "organisation"),
            ("a/.hidden", "repository"),
        ] {
            let e = ModelRef::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
