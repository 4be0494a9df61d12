//! Which files of a repository a quant tag names: the GGUF file, or the complete split set, whose
//! path carries the tag as a whole word, case-insensitively (`Q4_K` does not match `Q4_K_M`).

use frugal_formats::split::split_part;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantChoiceError {
    #[error("{repo} has no GGUF file for quant '{tag}'; it has: {}", list(.available))]
    NoMatch {
        repo: String,
        tag: String,
        available: Vec<String>,
    },
    #[error("quant '{tag}' matches several models in {repo}: {}; name the file (ORG/REPO/FILE.gguf)", list(.choices))]
    Ambiguous {
        repo: String,
        tag: String,
        choices: Vec<String>,
    },
    #[error("{repo}: the split model {first} is incomplete (part {missing} of {count} is not in the repository)")]
    IncompleteSplit {
        repo: String,
        first: String,
        missing: u32,
        count: u32,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no GGUF files".into()
    } else {
        items.join(", ")
    }
}

/// The files of `repo` (paths inside it, as the Hub lists them) that quant `tag` names, in load
/// order. Multimodal projectors (`mmproj*`) are never the model.
pub fn choose_files(
    repo: &str,
    files: &[String],
    tag: &str,
) -> Result<Vec<String>, QuantChoiceError> {
    let models: Vec<&String> = files
        .iter()
        .filter(|f| {
            f.to_ascii_lowercase().ends_with(".gguf")
                && !base_name(f).to_ascii_lowercase().starts_with("mmproj")
        })
        .collect();
    // One choice per single file or split set, keyed by the name it goes by.
    let mut choices: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for f in models.iter().filter(|f| has_word(f, tag)) {
        let key = match split_part(base_name(f)) {
            Some(p) => format!("{}{}", dir_of(f), p.prefix),
            None => f.to_string(),
        };
        choices.entry(key).or_default().push(f);
    }
    let mut picked = match choices.len() {
        1 => choices.into_values().next().unwrap_or_default(),
        0 => {
            return Err(QuantChoiceError::NoMatch {
                repo: repo.into(),
                tag: tag.into(),
                available: models.iter().map(|f| f.to_string()).collect(),
            })
        }
        _ => {
            return Err(QuantChoiceError::Ambiguous {
                repo: repo.into(),
                tag: tag.into(),
                choices: choices.into_keys().collect(),
            })
        }
    };
    picked.sort();
    complete_split(repo, &picked)?;
    Ok(picked.into_iter().cloned().collect())
}

/// A split set must have every part, numbered 1..=count.
fn complete_split(repo: &str, parts: &[&String]) -> Result<(), QuantChoiceError> {
    let Some(first) = split_part(base_name(parts[0])) else {
        return Ok(());
    };
    for i in 1..=first.count {
        let present = parts.iter().any(|p| {
            split_part(base_name(p)).is_some_and(|s| s.index == i && s.count == first.count)
        });
        if !present {
            return Err(QuantChoiceError::IncompleteSplit {
                repo: repo.into(),
                first: parts[0].to_string(),
                missing: i,
                count: first.count,
            });
        }
    }
    Ok(())
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn dir_of(path: &str) -> &str {
    &path[..path.len() - base_name(path).len()]
}

/// Whether `tag` occurs in `path` as a whole word: not next to a letter, digit or `_`.
fn has_word(path: &str, tag: &str) -> bool {
    let (hay, needle) = (path.to_ascii_lowercase(), tag.to_ascii_lowercase());
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = hay.as_bytes();
    hay.match_indices(&needle).any(|(i, m)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + m.len()).copied();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_tag_picks_one_file_case_insensitively_as_a_whole_word() {
        let repo = files(&[
            "README.md",
            "Qwen3-8B-Q4_K_M.gguf",
            "Qwen3-8B-Q4_K_S.gguf",
            "Qwen3-8B-Q8_0.gguf",
            "mmproj-Qwen3-8B-Q8_0.gguf",
        ]);
        assert_eq!(
            choose_files("q", &repo, "q4_k_m").unwrap(),
            ["Qwen3-8B-Q4_K_M.gguf"]
        );
        assert_eq!(
            choose_files("q", &repo, "Q8_0").unwrap(),
            ["Qwen3-8B-Q8_0.gguf"]
        );
        let e = choose_files("q", &repo, "Q4_K").unwrap_err();
        assert!(matches!(e, QuantChoiceError::NoMatch { .. }), "{e}");
        assert!(e.to_string().contains("Qwen3-8B-Q4_K_S.gguf"), "{e}");
    }

    #[test]
    fn a_split_set_is_one_choice_and_must_be_complete() {
        let repo = files(&[
            "Q4_K_M/GLM-Q4_K_M-00002-of-00002.gguf",
            "Q4_K_M/GLM-Q4_K_M-00001-of-00002.gguf",
            "GLM-Q8_0.gguf",
        ]);
        assert_eq!(
            choose_files("z", &repo, "Q4_K_M").unwrap(),
            [
                "Q4_K_M/GLM-Q4_K_M-00001-of-00002.gguf",
                "Q4_K_M/GLM-Q4_K_M-00002-of-00002.gguf"
            ]
        );
        let broken = files(&[
            "GLM-Q4_K_M-00001-of-00003.gguf",
            "GLM-Q4_K_M-00003-of-00003.gguf",
        ]);
        let e = choose_files("z", &broken, "Q4_K_M").unwrap_err();
        assert!(
            matches!(e, QuantChoiceError::IncompleteSplit { missing: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn several_models_with_the_tag_are_listed() {
        let repo = files(&["a-Q4_0.gguf", "b-Q4_0.gguf"]);
        let e = choose_files("r", &repo, "Q4_0").unwrap_err();
        assert!(e.to_string().contains("a-Q4_0.gguf, b-Q4_0.gguf"), "{e}");
    }
}
