//! A deterministic URL workload: unique canonical URLs, variants of them that normalize to
//! the same URL, and malformed inputs — with the expected outcome computed independently of
//! the normalizer under test (the canonical forms are written out by hand).

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Inputs and what the pipeline must make of them.
pub struct Dataset {
    /// Messages to produce, in order.
    pub inputs: Vec<String>,
    /// Exactly the normalized URLs the urls topic must hold.
    pub unique: HashSet<String>,
    /// How many inputs must be dead-lettered.
    pub malformed: usize,
}

fn canonical(i: usize) -> String {
    // Lower-case host, no default port, no dot segments, no fragment, no tracking params:
    // already in normal form.
    let host = format!("h{}.site{}.example{}.com", i % 97, i % 13, i % 7);
    match i % 4 {
        0 => format!("http://{host}/page/{i}"),
        1 => format!("https://{host}/a/b/{i}.html?id={i}&x=y"),
        2 => format!("https://www.{host}/~user{i}/"),
        _ => format!("http://{host}:8080/search?q=term{i}"),
    }
}

/// A different spelling of `canonical(i)` that must normalize to it.
fn variant(i: usize, rng: &mut StdRng) -> String {
    let c = canonical(i);
    let (scheme, rest) = c.split_once("://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let path = format!("/{path}");
    match rng.random_range(0..7) {
        0 => format!(
            "{}://{}{}",
            scheme.to_uppercase(),
            host.to_uppercase(),
            path
        ),
        1 => {
            let port = if scheme == "http" { ":80" } else { ":443" };
            if host.contains(':') {
                format!("{scheme}://{host}{path}#section-{i}")
            } else {
                format!("{scheme}://{host}{port}{path}")
            }
        }
        2 => format!("{c}#fragment-{i}"),
        3 => {
            let sep = if c.contains('?') { '&' } else { '?' };
            format!("{c}{sep}utm_source=newsletter&utm_medium=email")
        }
        4 => format!("{scheme}://{host}/x/..{path}"),
        5 => format!("  {scheme}://{host}/.{path}  "),
        _ => format!("{}://{}{}", scheme, host, path.replace('~', "%7e")),
    }
}

fn malformed(i: usize) -> String {
    match i % 6 {
        0 => format!("not a url {i}"),
        1 => format!("ftp://files{i}.example.com/pub/"),
        2 => "http://".to_string(),
        3 => format!("javascript:alert({i})"),
        4 => format!("http://exa mple{i}.com/"),
        _ => format!("https://long{i}.example.com/{}", "a".repeat(2100)),
    }
}

/// `total` inputs: 5% malformed, 30% duplicates (after normalization), the rest unique.
pub fn dataset(total: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_bad = total * 5 / 100;
    let n_dup = total * 30 / 100;
    let n_unique = total - n_bad - n_dup;
    let mut inputs = Vec::with_capacity(total);
    let mut unique = HashSet::new();
    for i in 0..n_unique {
        // Half the first sightings are already variants: what counts is the normal form.
        let s = if rng.random_bool(0.5) {
            canonical(i)
        } else {
            variant(i, &mut rng)
        };
        inputs.push(s);
        unique.insert(canonical(i));
    }
    for _ in 0..n_dup {
        let i = rng.random_range(0..n_unique);
        inputs.push(if rng.random_bool(0.3) {
            canonical(i)
        } else {
            variant(i, &mut rng)
        });
    }
    for i in 0..n_bad {
        inputs.push(malformed(i));
    }
    inputs.shuffle(&mut rng);
    assert_eq!(unique.len(), n_unique);
    Dataset {
        inputs,
        unique,
        malformed: n_bad,
    }
}
