//! What a user names when they name a model, and which files that is: a local file (an existing
//! path always wins), a split GGUF set (`*-00001-of-0000N.gguf`, one model), or a Hugging Face Hub
//! reference, `ORG/REPO[:QUANT]` (the GGUF file or split set whose name carries the quant tag,
//! Q4_K_M by default) or `ORG/REPO/FILE.gguf`, either with an optional `@revision`; and getting
//! a Hub reference's files into the Hugging Face cache (`huggingface_hub`'s layout, shared with
//! it), from `HF_ENDPOINT`, or from the cache alone with `HF_HUB_OFFLINE`.

#![forbid(unsafe_code)]

pub mod cache;
pub mod client;
pub mod download;
pub mod error;
pub mod inventory;
pub mod quant;
pub mod reference;
pub mod resolve;

pub use cache::Cache;
pub use client::HubConfig;
pub use download::{Progress, ProgressFn};
pub use error::HubError;
pub use frugal_formats::split::{part_name, split_part, split_set, SplitPart};
pub use quant::{choose_files, QuantChoiceError};
pub use reference::{HubRef, ModelRef, RefError, RepoFile};
pub use resolve::{resolve, resolve_cached, resolve_hub, Options, Resolved};
