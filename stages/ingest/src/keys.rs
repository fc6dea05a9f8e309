//! API keys, compared in constant time.
//!
//! Keys are kept and compared as SHA-256 digests: a comparison of the raw bytes returns at
//! once when the lengths differ, which tells a caller how long the keys are.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::Settings;

/// The accepted keys (empty with `auth: false`).
#[derive(Clone)]
pub struct ApiKeys {
    required: bool,
    /// SHA-256 digests of the keys.
    keys: Vec<[u8; 32]>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads keys from the environment variable and the file the settings name.
    pub fn load(s: &Settings) -> anyhow::Result<Self> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if let Ok(v) = std::env::var(&s.api_keys_env) {
            keys.extend(split(&v, ','));
        }
        if let Some(path) = &s.api_keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading API keys from {}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        if s.auth && keys.is_empty() {
            anyhow::bail!(
                "ingest requires API keys: set {} (comma-separated) or `api_keys_file`, or set `auth: false`",
                s.api_keys_env
            );
        }
        Ok(Self {
            required: s.auth,
            keys: keys.iter().map(|k| digest(k)).collect(),
        })
    }

    /// Whether `presented` is acceptable. Every key is compared, in constant time, so the
    /// timing says nothing about which key (or how much of one) matched.
    pub fn allows(&self, presented: Option<&[u8]>) -> bool {
        if !self.required {
            return true;
        }
        let Some(p) = presented else { return false };
        let p = digest(p);
        let mut ok = subtle::Choice::from(0);
        for k in &self.keys {
            ok |= k.ct_eq(&p);
        }
        ok.into()
    }
}

fn split(v: &str, sep: char) -> impl Iterator<Item = Vec<u8>> + '_ {
    v.split(sep)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_keys() {
        let k = ApiKeys {
            required: true,
            keys: vec![digest(b"alpha"), digest(b"beta")],
        };
        assert!(k.allows(Some(b"beta")));
        assert!(!k.allows(Some(b"bet")));
        assert!(!k.allows(Some(b"")));
        assert!(!k.allows(None));
        let open = ApiKeys {
            required: false,
            keys: vec![],
        };
        assert!(open.allows(None));
    }

    #[test]
    fn auth_without_keys_is_a_startup_error() {
        let s = Settings {
            api_keys_env: "SLUICE_TEST_SURELY_UNSET_VAR".into(),
            ..Settings::default()
        };
        let err = ApiKeys::load(&s).err().expect("must fail").to_string();
        assert!(err.contains("SLUICE_TEST_SURELY_UNSET_VAR"), "{err}");
    }
}
