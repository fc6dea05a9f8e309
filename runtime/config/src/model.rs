//! The typed pipeline description produced by [`load`](crate::load).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Pos;
use crate::node::Node;
use crate::spanned::Spanned;

/// A whole `pipeline.yaml`, after interpolation and `--set` overrides.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// The message bus.
    pub broker: Spanned<Broker>,
    /// Extra client properties for the broker (e.g. `security.protocol`).
    pub broker_options: IndexMap<String, String>,
    /// External services the stages may use.
    pub services: Services,
    /// Topic that receives messages a stage gave up on.
    pub dead_letter: Option<Spanned<String>>,
    /// Declared topics, in file order.
    pub topics: IndexMap<String, TopicSpec>,
    /// Declared stages, in file order.
    pub stages: IndexMap<String, StageSpec>,
    /// The whole interpolated and overridden tree (e.g. to embed in a
    /// ConfigMap via [`Node::to_yaml_string`]).
    pub source: Node,
    /// The file the pipeline was loaded from (the origin name for `load_str`).
    pub path: PathBuf,
}

impl Pipeline {
    /// The effective configuration as YAML text.
    pub fn to_yaml(&self) -> String {
        self.source.to_yaml_string()
    }
}

/// Where messages travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// In-process topics (tests, single-process runs).
    Memory,
    /// A Kafka cluster.
    Kafka {
        /// Comma-separated `host:port` list, without any `kafka://` prefix.
        bootstrap: String,
    },
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broker::Memory => f.write_str("memory"),
            Broker::Kafka { bootstrap } => f.write_str(bootstrap),
        }
    }
}

/// A service that is either simulated in memory or reached over the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An in-process stand-in.
    Memory,
    /// One or more remote addresses (`host:port` or URLs, by service).
    Remote(Vec<String>),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Memory => f.write_str("memory"),
            Endpoint::Remote(list) => f.write_str(&list.join(",")),
        }
    }
}

/// The `services:` section.
#[derive(Debug, Clone)]
pub struct Services {
    /// Memcached: `memory` or `host:port[,host:port]`.
    pub memcached: Spanned<Endpoint>,
    /// etcd: `memory` or `http://host:port[,...]`.
    pub etcd: Spanned<Endpoint>,
    /// Chroma URL; `None` when absent or empty.
    pub chroma: Option<Spanned<String>>,
    /// Local directory or object-store URL; default `./data`.
    pub storage: Spanned<String>,
}

/// One entry of `topics:`.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// The topic's name (its key).
    pub name: String,
    /// Partition count, at least 1.
    pub partitions: u32,
    /// Replication factor (Kafka's `-1` means the broker default).
    pub replication: i16,
    /// Declared message type, for topics fed from outside the pipeline.
    pub message_type: Option<Spanned<String>>,
    /// Largest record the topic takes (`max_message_bytes`, Kafka's `max.message.bytes`);
    /// `None`: the bus default, which fits the crawl's largest record.
    pub max_message_bytes: Option<u32>,
    /// Position of the topic's key.
    pub pos: Pos,
}

/// Retry policy of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Attempts per message before it goes to the dead-letter topic (>= 1).
    pub attempts: u32,
    /// First delay between attempts.
    #[serde(with = "crate::duration::serde_duration")]
    pub backoff: Duration,
    /// Upper bound of the exponential backoff.
    #[serde(with = "crate::duration::serde_duration")]
    pub max_backoff: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// One entry of `stages:`.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// The stage's name (its key).
    pub name: String,
    /// The stage kind, looked up in a [`KindCatalog`](crate::KindCatalog).
    pub kind: Spanned<String>,
    /// Topic the stage consumes; absent for sources.
    pub input: Option<Spanned<String>>,
    /// Output port field (`output`, `discovered`, ...) to topic. `load` fills
    /// in `output` only; the kind's other ports are moved here from
    /// `settings` by [`bind_ports`](crate::bind_ports) /
    /// [`load_validated`](crate::load_validated).
    pub outputs: IndexMap<String, Spanned<String>>,
    /// Number of processes; 0 means not deployed.
    pub replicas: u32,
    /// Maximum messages in flight per process.
    pub concurrency: Option<u32>,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Output topics that deliberately close a cycle.
    pub feedback: Vec<Spanned<String>>,
    /// Free-form resource requests, kept for the Kubernetes renderer.
    pub resources: Option<Node>,
    /// Free-form autoscaling policy, kept for the Kubernetes renderer.
    pub autoscale: Option<Node>,
    /// Map of the kind-specific fields only, with positions.
    pub settings: Node,
    /// Position of the stage's key.
    pub pos: Pos,
}

impl StageSpec {
    /// The topics this stage writes, in port order, with their port field.
    pub fn output_topics(&self) -> impl Iterator<Item = (&str, &Spanned<String>)> {
        self.outputs
            .iter()
            .map(|(port, topic)| (port.as_str(), topic))
    }

    /// Whether writing `topic` is declared as a deliberate feedback edge.
    pub fn is_feedback(&self, topic: &str) -> bool {
        self.feedback.iter().any(|t| t.value == topic)
    }
}
