//! Text generation on top of a model: choosing tokens ([`sampler`]), stopping at stop strings
//! ([`stop`]), and the loop that runs one sequence with a reusable KV cache ([`session`]).

pub mod sampler;
pub mod session;
pub mod stop;
