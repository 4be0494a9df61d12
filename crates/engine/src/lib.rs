//! Text generation on top of a model: choosing tokens ([`sampler`]), stopping at stop strings
//! ([`stop`]), the loop that runs one sequence with a reusable KV cache ([`session`]), and the
//! continuous-batching step over many sequences ([`batch`]).

#![forbid(unsafe_code)]

pub mod batch;
pub mod constraint;
pub mod sampler;
pub mod session;
pub mod stop;
