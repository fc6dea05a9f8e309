//! The list of stage kinds a binary knows. The `sluice` binary registers each kind in one
//! line (`src/stages.rs`); the runtime itself knows none of them.

use std::sync::Arc;

use indexmap::IndexMap;
use sluice_config::{KindCatalog, KindInfo};

use crate::stage::StageKind;

/// Registered stage kinds, by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: IndexMap<&'static str, Arc<dyn StageKind>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind. Panics on a duplicate name: that is a programming error.
    pub fn register(&mut self, kind: impl StageKind) -> &mut Self {
        let name = kind.info().name;
        let previous = self.kinds.insert(name, Arc::new(kind));
        assert!(previous.is_none(), "stage kind `{name}` registered twice");
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn StageKind>> {
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
}
