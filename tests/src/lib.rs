//! Shared pieces of the end-to-end suites in `tests/tests/`: starting and killing real
//! `runneld` processes, and the ledger of acknowledged records that every suite checks
//! against at the end.
//!
//! Everything here exists only in a normal build; under `--cfg madsim` the crate is
//! empty.

#![cfg(not(madsim))]

pub mod ledger;
