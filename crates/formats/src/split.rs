//! Split GGUF sets: `NAME-00001-of-00003.gguf`, `NAME-00002-of-00003.gguf`, … are one model,
//! named by any of its parts (llama.cpp's `gguf-split` naming).

use std::path::{Path, PathBuf};

/// Where one file stands in a split set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    /// The name before `-0000K-of-0000N.gguf`.
    pub prefix: String,
    /// 1-based.
    pub index: u32,
    pub count: u32,
}

/// The split position a file name carries, if it is part of a set.
pub fn split_part(name: &str) -> Option<SplitPart> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let number = |s: &str| {
        (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (index, count) = (number(index)?, number(count)?);
    (1..=count).contains(&index).then(|| SplitPart {
        prefix: prefix.to_string(),
        index,
        count,
    })
}

/// The name of part `index` of a set.
pub fn part_name(prefix: &str, index: u32, count: u32) -> String {
    format!("{prefix}-{index:05}-of-{count:05}.gguf")
}

/// Every file of the set `path` belongs to, in order (just `path` when it is not a split part).
/// A missing part is an error naming it.
pub fn split_set(path: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(part) = split_part(name) else {
        return Ok(vec![path.to_path_buf()]);
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut files = Vec::with_capacity(part.count as usize);
    for i in 1..=part.count {
        let f = dir.join(part_name(&part.prefix, i, part.count));
        if !f.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is part {} of a split model of {} files, but part {i} ({}) is missing",
                    path.display(),
                    part.index,
                    part.count,
                    f.display()
                ),
            ));
        }
        files.push(f);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_are_recognised_and_others_are_not() {
        assert_eq!(
            split_part("GLM-4.5-Air-Q4_K_M-00002-of-00003.gguf"),
            Some(SplitPart {
                prefix: "GLM-4.5-Air-Q4_K_M".into(),
                index: 2,
                count: 3
            })
        );
        for name in [
            "model.gguf",
            "m-00004-of-00003.gguf",
            "m-0001-of-0003.gguf",
            "m-00000-of-00003.gguf",
            "m-00001-of-00003.bin",
        ] {
            assert_eq!(split_part(name), None, "{name}");
        }
        assert_eq!(part_name("m", 2, 3), "m-00002-of-00003.gguf");
    }

    #[test]
    fn a_set_is_found_from_any_part_and_a_missing_part_is_named() {
        let dir = std::env::temp_dir().join(format!("frugal-hub-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=3 {
            std::fs::write(dir.join(part_name("m", i, 3)), b"").unwrap();
        }
        let set = split_set(&dir.join(part_name("m", 2, 3))).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set[0].ends_with("m-00001-of-00003.gguf"));
        std::fs::remove_file(dir.join(part_name("m", 3, 3))).unwrap();
        let e = split_set(&dir.join(part_name("m", 1, 3))).unwrap_err();
        assert!(e.to_string().contains("part 3"), "{e}");
        assert_eq!(split_set(Path::new("/x/model.gguf")).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
