//! Terminal output: progress bar and tables.

pub mod progress;
pub mod table;
