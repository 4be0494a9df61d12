//! KV-cache events for routers that place requests where their prefix is cached (the Gateway
//! API Inference Extension's and llm-d's precise prefix-cache scorers): each block that enters
//! or leaves a model's prefix cache, announced under the hash vLLM would give it
//! ([`hash`]: its prefix-caching hash, seed and chaining), in vLLM's message schema
//! ([`event`]: msgpack as its msgspec encoder writes it), over ZeroMQ PUB as vLLM publishes
//! ([`publisher`]). [`tracker`] turns the cache's own changes into those events.

#![forbid(unsafe_code)]

pub mod event;
pub mod hash;
pub mod publisher;
pub mod tracker;

pub use event::{encode_batch, KvEvent, MEDIUM_CPU};
pub use hash::{HashAlgo, DEFAULT_SEED};
pub use publisher::{Publisher, PublisherConfig, PublisherError};
pub use tracker::Tracker;
