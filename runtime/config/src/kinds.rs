//! How the runtime describes stage kinds: to the validator (ports, message types, settings), and
//! to whatever deploys them (what a stage's pod must open and reserve), so neither has to know
//! any kind by name.

use crate::diagnostic::Diagnostic;
use crate::node::Node;

/// An output port of a stage kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// The stage field naming the topic: `output`, or an extra port such as
    /// `discovered`.
    pub field: &'static str,
    /// Name of the message type written to that topic.
    pub message_type: &'static str,
    /// Whether a stage of this kind must set the field.
    pub required: bool,
}

/// Everything the validator needs to know about one stage kind.
#[derive(Debug, Clone)]
pub struct KindInfo {
    /// The name used in `kind:`.
    pub name: &'static str,
    /// One line for listings.
    pub summary: &'static str,
    /// Message type read from `input`; `None` for sources (e.g. an HTTP
    /// ingest), which must not have an `input`.
    pub input: Option<&'static str>,
    /// Output ports, including `output` if the kind has one.
    pub outputs: Vec<PortInfo>,
    /// Check the kind-specific settings (a map without the common and port
    /// fields); typically [`check_with::<Settings>`](crate::check_with).
    pub check_settings: fn(&Node) -> Result<(), Vec<Diagnostic>>,
    /// What a stage of this kind needs from its deployment; most kinds need
    /// nothing beyond the defaults (`deployment: Default::default()`).
    pub deployment: DeploymentInfo,
}

impl KindInfo {
    /// The port with the given field name.
    pub fn port(&self, field: &str) -> Option<&PortInfo> {
        self.outputs.iter().find(|p| p.field == field)
    }
}

/// What a stage of some kind needs from the deployment that runs it, beyond what every stage
/// gets (its metrics and health port, the pipeline file). Declared by the kind, in the manner
/// of Vector's `Config::resources()`, so a renderer reads it instead of special-casing kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Ports the stage listens on, each from an address in its settings.
    pub listens: Vec<ListenPort>,
    /// Requests and limits when the stage sets no `resources:` of its own.
    pub resources: Resources,
}

/// A port a stage listens on, at an address one of its settings holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenPort {
    /// The settings field holding the `host:port` address (ingest: `listen`).
    pub setting: &'static str,
    /// The address when the field is not set. Pass the settings type's own default (a
    /// constant both use), so the port opened and the port listened on cannot drift apart.
    pub default_address: &'static str,
    /// The container port's name; Services and Ingresses refer to the port by it.
    pub name: &'static str,
    /// The port of a Service in front of the stage's pods; `None` keeps it inside the pod.
    pub service_port: Option<u16>,
    /// A path prefix an Ingress routes to that Service, when ingresses are rendered; `None`
    /// for no Ingress. Needs `service_port`.
    pub ingress_path: Option<&'static str>,
}

impl ListenPort {
    /// The port a stage with these `settings` listens on: that of the address in
    /// [`setting`](Self::setting), or of [`default_address`](Self::default_address) when unset.
    pub fn port(&self, settings: &Node) -> Result<u16, Diagnostic> {
        let (address, pos) = match settings.get(self.setting) {
            Some(node) if !node.is_null() => match node.as_str() {
                Some(text) => (text, &node.pos),
                None => {
                    return Err(Diagnostic::error(
                        node.pos.clone(),
                        format!("`{}` must be a `host:port` address", self.setting),
                    ))
                }
            },
            _ => (self.default_address, &settings.pos),
        };
        address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                Diagnostic::error(
                    pos.clone(),
                    format!(
                        "`{}`: `{address}` has no port to open (expected `host:port`)",
                        self.setting
                    ),
                )
            })
    }
}

/// Requests and limits of a stage's container, as `(resource, quantity)` pairs in
/// Kubernetes notation (`("cpu", "100m")`, `("memory", "128Mi")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// What the scheduler reserves for the container.
    pub requests: &'static [(&'static str, &'static str)],
    /// What the container may not exceed.
    pub limits: &'static [(&'static str, &'static str)],
}

impl Default for Resources {
    /// A stage handling a bounded number of records at a time: a small reservation so pods
    /// pack densely, and a memory limit that stops a leak before it starves the node. No CPU
    /// limit: throttling a stage only grows its lag.
    fn default() -> Self {
        Resources {
            requests: &[("cpu", "100m"), ("memory", "128Mi")],
            limits: &[("memory", "512Mi")],
        }
    }
}

/// The set of stage kinds a runtime knows.
pub trait KindCatalog {
    /// Describe the kind called `name`, if known.
    fn kind(&self, name: &str) -> Option<KindInfo>;
    /// All known kind names (for "unknown kind" messages and listings).
    fn kind_names(&self) -> Vec<&'static str>;
}

impl KindCatalog for [KindInfo] {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.iter().find(|k| k.name == name).cloned()
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.iter().map(|k| k.name).collect()
    }
}

impl KindCatalog for Vec<KindInfo> {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.as_slice().kind(name)
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.as_slice().kind_names()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const HTTP: ListenPort = ListenPort {
        setting: "listen",
        default_address: "0.0.0.0:8080",
        name: "http",
        service_port: Some(80),
        ingress_path: None,
    };

    fn settings(text: &str) -> Node {
        Node::parse(text, &Arc::from("s.yaml")).unwrap()
    }

    #[test]
    fn the_port_comes_from_the_setting_or_else_the_default_address() {
        assert_eq!(HTTP.port(&settings("listen: 127.0.0.1:9000\n")), Ok(9000));
        assert_eq!(HTTP.port(&settings("listen: '[::]:9001'\n")), Ok(9001));
        assert_eq!(HTTP.port(&settings("other: 1\n")), Ok(8080));
        assert_eq!(HTTP.port(&settings("listen:\n")), Ok(8080));
        assert_eq!(HTTP.port(&settings("{}")), Ok(8080));
    }

    #[test]
    fn an_address_without_a_port_is_a_positioned_error() {
        let e = HTTP
            .port(&settings("a: 1\nlisten: localhost\n"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.yaml:2:9: error: `listen`: `localhost` has no port to open (expected `host:port`)"
        );
        let e = HTTP.port(&settings("listen: [1]\n")).unwrap_err();
        assert!(e.to_string().starts_with("s.yaml:1:9: error:"), "{e}");
    }
}
