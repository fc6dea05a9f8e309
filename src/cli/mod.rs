//! One module per command.

pub mod consume;
pub mod graph;
pub mod k8s;
pub mod load;
pub mod produce;
pub mod query;
pub mod run;
pub mod search;
pub mod topics;
pub mod validate;
