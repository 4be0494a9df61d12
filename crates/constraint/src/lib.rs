//! A per-sequence hook that shapes which tokens may come next: grammar constraints (JSON schema,
//! tool calls), reasoning budgets, forced closing tags. The batching step calls [`Constraint::mask`]
//! on a sequence's logits before sampling and [`Constraint::accept`] with the token it chose.
#![forbid(unsafe_code)]

/// Shapes one sequence's choices. Implementations live outside the engine (see `frugal-output`).
pub trait Constraint: Send {
    /// Sets the logits of tokens that may not come next to `f32::NEG_INFINITY`. Must leave at
    /// least one finite logit (the end-of-generation token counts) unless it returns an error.
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError>;

    /// Records the token that was sampled. Returns `true` when the constraint says the output is
    /// complete (the engine then ends the sequence as if it had sampled end-of-generation).
    fn accept(&mut self, token: u32) -> Result<bool, ConstraintError>;
}

/// The constraint cannot go on (no token is allowed, or the grammar engine failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constraint failed: {0}")]
pub struct ConstraintError(pub String);
