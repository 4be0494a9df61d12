//! Opening the prefix cache's disk tier for the served model (`--cache-dir`): its directory is
//! named by a fingerprint of everything a cached block's numbers depend on, so that another
//! model, KV type, block size or kernel set never reads this one's blocks.

use crate::{ServerConfig, ServerError};
use frugal_diskcache::{fingerprint, DiskCache};
use frugal_kernels::Isa;
use frugal_loader::ModelFile;

/// The disk tier `cfg` asks for, if any.
pub fn open(cfg: &ServerConfig, file: &ModelFile) -> Result<Option<DiskCache>, ServerError> {
    let Some(root) = &cfg.cache_dir else {
        return Ok(None);
    };
    let size = file.gguf.file_size();
    let weights = if cfg.dequantize {
        "dequantized"
    } else {
        "as stored"
    };
    let isa = Isa::best().name();
    let kv_type = cfg.kv_type.name();
    let id = fingerprint(&[
        &file.gguf.headers().concat(),
        &size.to_le_bytes(),
        kv_type.as_bytes(),
        &(cfg.block_size as u64).to_le_bytes(),
        weights.as_bytes(),
        isa.as_bytes(),
    ]);
    let about = format!(
        "model: {}\nfile size: {size}\nKV type: {kv_type}\nblock size: {}\nweights: {weights}\n\
         kernels: {isa}\n",
        file.path.display(),
        cfg.block_size,
    );
    let cache = DiskCache::open(root, id, &about, cfg.cache_disk_size)
        .map_err(|e| ServerError::Config(format!("--cache-dir {}: {e}", root.display())))?;
    let s = cache.stats();
    tracing::info!(
        "disk cache: {} ({} blocks, {} MiB of at most {} MiB)",
        cache.dir().display(),
        s.files,
        s.bytes >> 20,
        cfg.cache_disk_size >> 20
    );
    Ok(Some(cache))
}
