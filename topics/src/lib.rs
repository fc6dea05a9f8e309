//! Message contracts of the crawl pipeline's topics.
//!
//! Every topic carries one message type, named by [`Contract::TYPE`]; `pipeline.yaml` validation
//! checks that a stage's input type is its producer's output type by these names. All contracts
//! are JSON, so any Kafka client (or `sluice consume`) can read them.
//!
//! | type        | struct        | typical topic | key                 |
//! |-------------|---------------|---------------|---------------------|
//! | `url-in`    | [`UrlIn`] (or an array of them, see [`UrlIn::decode_all`]) | `url-in` | none |
//! | `crawl-url` | [`CrawlUrl`] (or an array of them, see [`CrawlUrl::decode_all`]) | `urls` | registrable domain |
//! | `page`      | [`Page`]      | `pages`       | registrable domain  |
//! | `table-batch` | [`TableBatch`] | `page-batches`, `anchor-batches` | none |

mod crawl_url;
mod page;
mod table_batch;
mod url_in;

pub use crawl_url::{CrawlUrl, Validators};
pub use page::{FetchError, Page, Redirect};
pub use table_batch::{DerivedFile, TableBatch};
pub use url_in::UrlIn;

/// The messages of a value that holds one (decoded by `one`) or several (a JSON array).
fn decode_one_or_many<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    one: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        Ok(serde_json::from_slice(bytes)?)
    } else {
        Ok(vec![one(bytes)?])
    }
}

/// A message type that travels on a topic.
pub trait Contract: Sized {
    /// The type name used in `pipeline.yaml` validation.
    const TYPE: &'static str;
    /// Encodes the message value.
    fn encode(&self) -> Vec<u8>;
    /// Decodes a message value.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Why a message value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is not valid UTF-8.
    #[error("value is not valid UTF-8")]
    NotUtf8,
    /// The value is empty or only whitespace.
    #[error("value is empty")]
    Empty,
    /// The value is not the expected JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DecodeError {
    /// A stable machine-readable code for dead-letter headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::Empty => "empty",
            DecodeError::Json(_) => "invalid_json",
        }
    }
}
