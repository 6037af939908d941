//! Command handlers, one module per operation. Each handler validates first and mutates
//! after, so that an `Err` leaves the state as it was.

pub(crate) mod groups;
pub(crate) mod moves;
pub(crate) mod nodes;
pub(crate) mod placement;
pub(crate) mod streams;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
