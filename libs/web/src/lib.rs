//! URL helpers shared by the crawl pipeline's stages.
//!
//! Several stages need to agree, byte for byte, on what a URL "is" and which
//! site it belongs to: the normalize/dedup stage keys its seen-set on the
//! normalized form, while normalize, crawl and anchors group work (politeness,
//! per-site limits, internal vs. external links) by registrable domain. If each
//! stage carried its own copy of these rules they would drift and the dedup
//! keys would stop matching, so they live here, in one small crate with no
//! I/O and no async runtime.
//!
//! - [`normalize`](mod@normalize): canonical form of an absolute http(s) URL,
//!   or a [`Reject`] with a stable machine code.
//! - [`domain`]: eTLD+1 lookup through the Public Suffix List, which is
//!   bundled into the binary at build time (`data/public_suffix_list.dat`).
//! - [`href`]: an `href` as a browser reads it (decoded, cleaned, resolved to http(s)).
//! - [`text`]: text as the stages store it (whitespace collapsed).
//!
//! ```
//! use sluice_web::{normalize_str, registrable_domain, NormalizeOptions};
//!
//! let opts = NormalizeOptions::default();
//! let url = normalize_str("HTTP://WWW.Example.co.uk:80/a/../b?utm_source=x&id=7#top", &opts);
//! assert_eq!(url.as_deref(), Ok("http://www.example.co.uk/b?id=7"));
//! assert_eq!(registrable_domain("www.example.co.uk"), "example.co.uk");
//!
//! let reject = normalize_str("mailto:someone@example.com", &opts).unwrap_err();
//! assert_eq!(reject.code(), "unsupported_scheme");
//! ```

#![warn(missing_docs)]

pub mod domain;
pub mod href;
pub mod normalize;
pub mod text;

pub use domain::{registrable_domain, registrable_domain_of};
pub use normalize::{normalize, normalize_str, NormalizeOptions, Reject};

/// Re-exported so that stages use the same `url` version as [`normalize()`]
/// returns.
pub use url;
