//! Property tests: normalization is idempotent and its output is stable
//! under the `url` crate's own parser.

use proptest::prelude::*;
use sluice_web::{normalize_str, url, NormalizeOptions};

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

fn scheme() -> impl Strategy<Value = String> {
    pick(&["http", "https", "HTTP", "HtTpS", "ftp", "mailto"])
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?",
        1 => pick(&["bücher", "BÜCHER", "xn--bcher-kva", "日本", "straße", "ÉCOLE", "%41b", "a%2eb"]),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::collection::vec(label(), 1..4), pick(&["", "", ".", ".."]))
            .prop_map(|(labels, dots)| format!("{}{dots}", labels.join("."))),
        1 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), pick(&["", ".", ".."]))
            .prop_map(|(a, b, c, d, dots)| format!("{a}.{b}.{c}.{d}{dots}")),
        1 => pick(&["[::1]", "[0:0:0:0:0:0:0:1]", "[2001:DB8::1]", "[::ffff:1.2.3.4]", "0x7f.1",
            "0x7f.1.", "LOCALHOST", "a.1", "1.a", "%2e", "..a", "a..b", "xn--", "xn--a.com"]),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&["", ":", ":80", ":443", ":080"]),
        any::<u16>().prop_map(|p| format!(":{p}")),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_~.-]{0,6}",
        3 => pick(&[
            ".", "..", "%2e", "%2E", ".%2E", "%2e%2e", "%7e", "%7E", "%7euser", "%2f", "%2F",
            "%41", "%e2%82%ac", "€", " ", "%", "%%61b", "%zz", "a%", "%25", "%3f", "%23",
            "%3D", "%26", "%2b", "\\", "a\tb", "é", "'", "\"", "<>", "{}", "|", "^", "`",
        ]),
    ]
}

fn param() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        pick(&[
            "utm_source",
            "utm_medium",
            "UTM_SOURCE",
            "fbclid",
            "gclid",
            "_ga",
            "_gax",
            "%75tm_x",
            "a",
            "B",
            "q",
            "",
            "a%3db",
            "%e2%82%ac",
        ]),
        "[a-z]{1,4}",
    ];
    let value = prop_oneof![
        pick(&["", "1", "a+b", "%20", "%2B", "%7e", "%zz", "%", "x=y", "é", "'", "%26"]),
        "[a-zA-Z0-9]{0,4}",
    ];
    (name, prop::option::of(value)).prop_map(|(n, v)| match v {
        Some(v) => format!("{n}={v}"),
        None => n,
    })
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("?".to_owned()),
        4 => (prop::collection::vec(param(), 0..5), pick(&["&", "&", "&&"]))
            .prop_map(|(params, sep)| format!("?{}", params.join(&sep))),
    ]
}

fn fragment() -> impl Strategy<Value = String> {
    pick(&["", "#", "#frag", "#a?b=c", "#%7e"])
}

fn whitespace() -> impl Strategy<Value = String> {
    pick(&["", "", " ", "\t", "\n ", " \r\n"])
}

prop_compose! {
    fn url_string()(
        lead in whitespace(),
        scheme in scheme(),
        host in host(),
        port in port(),
        segments in prop::collection::vec(segment(), 0..6),
        trailing_slash in any::<bool>(),
        query in query(),
        fragment in fragment(),
        trail in whitespace(),
    ) -> String {
        let mut path = String::new();
        for s in &segments {
            path.push('/');
            path.push_str(s);
        }
        if trailing_slash {
            path.push('/');
        }
        format!("{lead}{scheme}://{host}{port}{path}{query}{fragment}{trail}")
    }
}

#[track_caller]
fn assert_idempotent(input: &str, opts: &NormalizeOptions) -> Result<(), TestCaseError> {
    if let Ok(once) = normalize_str(input, opts) {
        let twice = normalize_str(&once, opts);
        prop_assert_eq!(twice.as_ref(), Ok(&once), "input {:?}", input);
        // The serialization is already what the WHATWG parser would produce,
        // so consumers that re-parse it see the same string.
        let reparsed = url::Url::parse(&once).unwrap();
        prop_assert_eq!(reparsed.as_str(), once.as_str());
        prop_assert_ne!(reparsed.query(), Some(""));
        prop_assert!(once.len() <= opts.max_length);
        prop_assert!(!once.contains('#'));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn idempotent_on_generated_urls(input in url_string()) {
        assert_idempotent(&input, &NormalizeOptions::default())?;
    }

    #[test]
    fn idempotent_with_sorted_queries(input in url_string()) {
        let opts = NormalizeOptions { sort_query: true, ..NormalizeOptions::default() };
        assert_idempotent(&input, &opts)?;
    }

    #[test]
    fn idempotent_near_the_length_limit(input in url_string(), max in 10usize..60) {
        let opts = NormalizeOptions { max_length: max, ..NormalizeOptions::default() };
        assert_idempotent(&input, &opts)?;
    }

    #[test]
    fn idempotent_on_arbitrary_http_tails(tail in any::<String>()) {
        assert_idempotent(&format!("http://{tail}"), &NormalizeOptions::default())?;
    }

    #[test]
    fn idempotent_on_arbitrary_ascii(input in "[ -~\t\n]{0,60}") {
        assert_idempotent(&input, &NormalizeOptions::default())?;
        assert_idempotent(&format!("https://e.com/{input}"), &NormalizeOptions::default())?;
    }

    #[test]
    fn tracking_params_never_survive(input in url_string()) {
        if let Ok(out) = normalize_str(&input, &NormalizeOptions::default()) {
            let url = url::Url::parse(&out).unwrap();
            if let Some(q) = url.query() {
                for piece in q.split('&') {
                    let name = piece.split('=').next().unwrap_or("");
                    prop_assert!(!name.starts_with("utm_"), "{out}");
                    prop_assert!(!["fbclid", "gclid", "_ga"].contains(&name), "{out}");
                    prop_assert!(!piece.is_empty(), "{out}");
                }
            }
        }
    }
}

/// A fixed sample must be mostly accepted, otherwise the properties above
/// would mostly exercise rejection paths and prove little.
#[test]
fn generator_produces_accepted_urls() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = url_string();
    let opts = NormalizeOptions::default();
    let total = 2000;
    let accepted = (0..total)
        .filter(|_| {
            let input = strategy.new_tree(&mut runner).unwrap().current();
            normalize_str(&input, &opts).is_ok()
        })
        .count();
    assert!(
        accepted * 2 > total,
        "only {accepted}/{total} generated URLs accepted"
    );
}
