//! `sluice search`: the texts nearest in meaning to a query, with their URLs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sluice_stage_embeddings::{
    search_chroma, search_table, Chroma, Embedder, Hit, Query, Settings,
};

use crate::PipelineArgs;

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SearchFormat {
    /// An aligned table (the default on a terminal).
    Table,
    /// JSON lines (the default otherwise).
    Json,
}

/// What to search.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    /// Link texts.
    Anchor,
    /// Chunks of page text.
    Page,
}

/// Arguments of `search`.
#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The query text.
    query: String,
    /// Results.
    #[arg(short = 'k', long, default_value_t = 10)]
    k: usize,
    /// Only link texts or only page chunks.
    #[arg(long)]
    kind: Option<KindArg>,
    /// Only texts on pages of this registrable domain, or links into it.
    #[arg(long)]
    domain: Option<String>,
    /// Output format (default: table on a terminal, JSON lines otherwise).
    #[arg(long)]
    format: Option<SearchFormat>,
    /// The embeddings stage whose model and collection to use (default: the only one).
    #[arg(long)]
    stage: Option<String>,
    /// Search the embeddings table in storage even when Chroma is configured.
    #[arg(long)]
    exact: bool,
    /// Storage to read instead of the pipeline's `services.storage` (implies exact search
    /// when Chroma is not configured).
    #[arg(long, env = "SLUICE_QUERY_STORAGE")]
    storage: Option<String>,
}

/// The embeddings stage's settings.
fn stage_settings(p: &sluice_config::Pipeline, name: Option<&str>) -> anyhow::Result<Settings> {
    let candidates: Vec<_> = p
        .stages
        .values()
        .filter(|s| s.kind.value == "embeddings")
        .filter(|s| name.is_none_or(|n| s.name == n))
        .collect();
    let spec = match (candidates.as_slice(), name) {
        ([one], _) => one,
        ([], Some(n)) => anyhow::bail!("{}: no embeddings stage named `{n}`", p.path.display()),
        ([], None) => anyhow::bail!("{}: no stage of kind `embeddings`", p.path.display()),
        (_, _) => anyhow::bail!(
            "{}: several embeddings stages; choose one with --stage",
            p.path.display()
        ),
    };
    sluice_config::from_node(&spec.settings)
        .map_err(|d| anyhow::anyhow!("stage `{}`: {d}", spec.name))
}

fn print_table(hits: &[Hit], out: &mut impl Write) -> std::io::Result<()> {
    fn cut(s: &str, n: usize) -> String {
        if s.chars().count() <= n {
            s.to_string()
        } else {
            let mut t: String = s.chars().take(n - 1).collect();
            t.push('…');
            t
        }
    }
    writeln!(out, "{:>6}  {:<6}  {:<48}  url", "score", "kind", "text")?;
    for h in hits {
        let url = match &h.target_url {
            Some(t) => format!("{} → {}", h.source_url, t),
            None => h.source_url.clone(),
        };
        writeln!(
            out,
            "{:>6.3}  {:<6}  {:<48}  {}",
            h.score,
            h.kind,
            cut(&h.text, 48),
            url
        )?;
    }
    Ok(())
}

/// Runs the search and prints the hits.
pub async fn run(a: SearchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.k > 0, "-k must be at least 1");
    let pipeline = super::load::pipeline(&a.pipeline)?;
    let settings = stage_settings(&pipeline, a.stage.as_deref())?;
    // One query: one session is enough (the stage's default is one per core).
    let mut spec = settings.model();
    spec.sessions = Some(1);
    let model = tokio::task::spawn_blocking(move || Embedder::shared(&spec)).await??;
    let text = a.query.clone();
    let vector = tokio::task::spawn_blocking(move || model.embed(&[text.as_str()], 1))
        .await?
        .map_err(|e| anyhow::anyhow!("embedding the query: {e}"))?
        .pop()
        .expect("one vector per text");
    let query = Query {
        k: a.k,
        kind: a.kind.map(|k| match k {
            KindArg::Anchor => "anchor".to_string(),
            KindArg::Page => "page".to_string(),
        }),
        domain: a.domain.clone(),
    };
    let chroma = pipeline
        .services
        .chroma
        .as_ref()
        .filter(|_| !a.exact)
        .map(|url| Chroma::new(&url.value, &settings.collection));
    let hits = match &chroma {
        Some(c) => search_chroma(c, &vector, &query).await?,
        None => {
            let spec = a
                .storage
                .clone()
                .unwrap_or_else(|| pipeline.services.storage.value.clone());
            let storage = sluice_tables::Storage::open(&spec)?;
            search_table(&storage, &vector, &query).await?
        }
    };
    let to_terminal = std::io::stdout().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match a.format {
        Some(SearchFormat::Table) => print_table(&hits, &mut out)?,
        None if to_terminal => print_table(&hits, &mut out)?,
        _ => {
            for h in &hits {
                serde_json::to_writer(&mut out, h)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    if to_terminal {
        eprintln!(
            "{} results ({})",
            hits.len(),
            match &chroma {
                Some(c) => format!("chroma {}", c.url()),
                None => "exact search over the embeddings table".into(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
