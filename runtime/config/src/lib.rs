//! Loading, interpolating, overriding and validating Sluice `pipeline.yaml`
//! files, with every problem reported as `file:line:column`.
//!
//! The crate knows nothing about what stages do: their kinds are described to
//! it through [`KindCatalog`].
//!
//! # Flow
//!
//! 1. [`Node::parse`] builds a positioned YAML tree (anchors, aliases and
//!    `<<` merge keys are expanded; duplicate keys, several documents and
//!    custom tags are errors).
//! 2. `--set path=value` overrides ([`apply_sets`]) replace or create values;
//!    their nodes are positioned as [`Origin::Set`].
//! 3. [`interpolate`] substitutes `${VAR}`, `${VAR:-default}`,
//!    `${VAR-default}`, `${VAR:?message}` and `$$` in every scalar value of
//!    the file (values set by `--set` are literal).
//! 4. [`load`] / [`load_str`] build a [`Pipeline`]: structure, types, unknown
//!    fields, value ranges, broker and service addresses.
//! 5. [`bind_ports`] moves kind-specific output ports (`discovered: url-in`)
//!    from `settings` into [`StageSpec::outputs`].
//! 6. [`validate`] checks kinds, settings, ports, topics, message types and
//!    cycles, and warns about unused topics.
//!
//! [`load_validated`] does all of it. Callers that use [`load`] and
//! [`validate`] separately must call [`bind_ports`] before reading
//! `outputs` or deserializing `settings` with `deny_unknown_fields`.
//!
//! Any `#[derive(Deserialize)]` type can be read from a [`Node`] with
//! [`from_node`]; errors are positioned at the key (unknown field), the value
//! (wrong type or value) or the map (missing field). Wrap a field in
//! [`Spanned`] to keep its position.
//!
//! ```
//! use sluice_config::{load_str, Broker};
//!
//! let yaml = "name: demo\nbroker: ${BROKER:-memory}\ntopics:\n  t: {partitions: 2}\n";
//! let p = load_str(yaml, "pipeline.yaml", &[], &|_| None).unwrap();
//! assert_eq!(p.broker.value, Broker::Memory);
//! assert_eq!(p.topics["t"].partitions, 2);
//!
//! let sets = vec!["topics.t.partitions=0".to_string()];
//! let err = load_str(yaml, "pipeline.yaml", &sets, &|_| None).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "--set topics.t.partitions=0: error: partitions must be at least 1"
//! );
//! ```

#![warn(missing_docs)]

mod de;
mod diagnostic;
mod duration;
mod emit;
pub mod graph;
mod interpolate;
mod kinds;
mod load;
mod model;
mod node;
mod overrides;
mod scalar;
mod size;
mod spanned;
mod validate;

use std::path::Path;

pub use de::{
    check_validated, check_with, from_node, parse_validated, DeError, NodeDeserializer, Validate,
};
pub use diagnostic::{Diagnostic, Diagnostics, Origin, Pos, Severity};
pub use duration::{serde_duration, HumanDuration};
pub use emit::to_yaml_string;
pub use interpolate::interpolate;
pub use kinds::{
    DeploymentInfo, KindCatalog, KindInfo, ListenPort, PortInfo, Resources, SettingsCheck,
    StaticKind, ANY_TYPE,
};
pub use load::{load, load_str, parse_broker, parse_host_ports, COMMON_STAGE_FIELDS};
pub use model::{Broker, Endpoint, Pipeline, RetrySpec, Services, StageSpec, TopicSpec};
pub use node::{Node, NodeValue, ScalarStyle};
pub use overrides::{apply_set, apply_sets};
pub use size::ByteSize;
pub use spanned::Spanned;
pub use validate::{bind_ports, validate};

/// [`load`], then [`bind_ports`] and [`validate`]: the pipeline if there is no
/// error, together with its warnings; otherwise every diagnostic (errors and
/// warnings).
pub fn load_validated(
    path: &Path,
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    kinds: &dyn KindCatalog,
) -> Result<(Pipeline, Diagnostics), Diagnostics> {
    finish(load(path, sets, env)?, kinds)
}

/// [`load_str`], then [`bind_ports`] and [`validate`]; see [`load_validated`].
pub fn load_str_validated(
    text: &str,
    origin_name: &str,
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    kinds: &dyn KindCatalog,
) -> Result<(Pipeline, Diagnostics), Diagnostics> {
    finish(load_str(text, origin_name, sets, env)?, kinds)
}

fn finish(
    mut p: Pipeline,
    kinds: &dyn KindCatalog,
) -> Result<(Pipeline, Diagnostics), Diagnostics> {
    bind_ports(&mut p, kinds);
    let diags = validate(&p, kinds);
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok((p, diags))
    }
}

/// The process environment, for callers that have no reason to fake it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
