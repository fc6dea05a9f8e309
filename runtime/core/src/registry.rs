//! The list of stage kinds a binary knows. The `sluice` binary registers each kind in one
//! line (`src/stages.rs`); the runtime itself knows none of them.

use std::sync::Arc;

use indexmap::IndexMap;
use sluice_config::{Diagnostic, KindCatalog, KindInfo, Node, Pipeline, StageSpec};

use crate::stage::{DynKind, StageKind};

/// Registered stage kinds, by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: IndexMap<&'static str, Arc<dyn DynKind>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind. Panics on a duplicate name: that is a programming error.
    pub fn register(&mut self, kind: impl StageKind) -> &mut Self {
        let name = StageKind::info(&kind).name;
        let previous = self.kinds.insert(name, Arc::new(kind));
        assert!(previous.is_none(), "stage kind `{name}` registered twice");
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynKind>> {
        self.kinds.get(name).cloned()
    }
}

impl KindCatalog for Registry {
    fn kind(&self, name: &str) -> Option<KindInfo> {
        self.kinds.get(name).map(|k| k.info())
    }

    fn kind_names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    fn check_settings(&self, name: &str, settings: &Node) -> Result<(), Vec<Diagnostic>> {
        match self.kinds.get(name) {
            Some(k) => k.check_settings(settings),
            None => Ok(()),
        }
    }

    fn check_in_pipeline(
        &self,
        name: &str,
        stage: &StageSpec,
        settings: &Node,
        pipeline: &Pipeline,
    ) -> Vec<Diagnostic> {
        match self.kinds.get(name) {
            Some(k) => k.check_in_pipeline(stage, settings, pipeline),
            None => Vec::new(),
        }
    }
}
