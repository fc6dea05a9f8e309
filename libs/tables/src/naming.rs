//! Parquet file names derived from what the rows came from, so a replay after a crash writes
//! the same name (overwriting, never duplicating): `<topic>-p<partition>-<first>-<last>.parquet`
//! with offsets zero-padded to 20 digits, so names sort in offset order.

/// Where a file's rows came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// First offset covered.
    pub first: i64,
    /// Last offset covered.
    pub last: i64,
}

impl FileName {
    /// The file name.
    pub fn render(&self) -> String {
        format!("{}{:020}.parquet", self.prefix(), self.last)
    }

    /// The name up to the last offset: every file of this (topic, partition, first) starts so.
    pub fn prefix(&self) -> String {
        prefix(&self.topic, self.partition, self.first)
    }

    /// Parses a name made by [`FileName::render`].
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".parquet")?;
        let mut parts = stem.rsplitn(4, '-');
        let last = parts.next()?.parse().ok()?;
        let first = parts.next()?.parse().ok()?;
        let partition = parts.next()?.strip_prefix('p')?.parse().ok()?;
        let topic = parts.next()?.to_string();
        Some(Self {
            topic,
            partition,
            first,
            last,
        })
    }
}

/// The common start of the names of files beginning at `first`.
pub fn prefix(topic: &str, partition: i32, first: i64) -> String {
    format!("{topic}-p{partition}-{first:020}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_offset() {
        let a = FileName {
            topic: "my-pages".into(),
            partition: 3,
            first: 7,
            last: 120,
        };
        assert_eq!(
            a.render(),
            "my-pages-p3-00000000000000000007-00000000000000000120.parquet"
        );
        assert_eq!(FileName::parse(&a.render()), Some(a.clone()));
        let b = FileName {
            first: 121,
            last: 1000,
            ..a.clone()
        };
        assert!(a.render() < b.render());
        assert!(a.render().starts_with(&a.prefix()));
        assert_eq!(FileName::parse("x.parquet"), None);
        assert_eq!(FileName::parse("t-p1-2-3.csv"), None);
    }
}
