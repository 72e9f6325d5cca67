//! `bge-m3-encode`: encodes a whole corpus with BGE-M3 on this machine, through the same model
//! queue (and so the same scheduling policy) as the server.
//!
//! ```text
//! bge-m3-encode --model fixtures/models/tiny-pt corpus.jsonl -o vectors.jsonl
//! ```

mod input;
mod output;
#[cfg(feature = "parquet")]
mod parquet;
mod pipeline;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bge_m3_core::hub::{self, HubOptions};
use bge_m3_core::{BgeM3, DType, DeviceSpec, LoadOptions, Outputs};
use clap::Parser;

use input::{InputFormat, InputOptions};
use output::{OutputFormat, SparseFormat};
use progress::ProgressMode;

/// Encode a corpus with BGE-M3: JSONL, text lines or a directory of .txt/.md files in; dense,
/// sparse and ColBERT vectors out, one record per input in input order, as JSONL or Parquet.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Model directory (config.json, tokenizer.json, pytorch_model.bin or model.safetensors,
    /// colbert_linear.pt, sparse_linear.pt), or a Hugging Face repository id, downloaded into
    /// the Hugging Face cache on first use (HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).
    #[arg(long, env = "MODEL_PATH", default_value = "BAAI/bge-m3")]
    pub model: PathBuf,

    /// Revision of the Hub repository in --model: a branch, a tag or a commit hash.
    #[arg(long, default_value = hub::DEFAULT_REVISION)]
    pub revision: String,

    /// Inputs: JSONL or text files, directories (every .txt and .md file below, one document
    /// each, its path as id), or `-` for stdin. None: stdin.
    pub inputs: Vec<PathBuf>,

    /// How the inputs hold their documents (see the values).
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,

    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,

    /// The JSONL field holding the id (a string or an integer). A record without one gets its
    /// position in the corpus (0-based), as do the lines of a text input.
    #[arg(long, default_value = "id")]
    pub id_field: String,

    /// The output file. Default: stdout (JSONL).
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// The output's format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output_format: OutputFormat,

    /// The outputs to compute, comma-separated: dense, sparse, colbert.
    #[arg(long, value_delimiter = ',', default_value = "dense,sparse", value_parser = ["dense", "sparse", "colbert"])]
    pub outputs: Vec<String>,

    /// How the sparse weights are written (the server's `sparse_format`).
    #[arg(long, value_enum, default_value_t = SparseFormat::Indices)]
    pub sparse_format: SparseFormat,

    /// Truncate texts to this many tokens, `<s>` and `</s>` included (1..=8192).
    #[arg(long, default_value_t = 8192)]
    pub max_length: usize,

    /// A longer text is a bad record (see --on-error), as the server refuses it.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_text_chars: usize,

    /// What to do with a bad record (invalid JSON, no text field, a text over
    /// --max-text-chars): `fail` stops after writing the records before it (exit status 1);
    /// `skip` reports it with its line and goes on.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,

    /// Continue an interrupted run: skip the records whose id is already in --output and
    /// append the others (the options must be those of the first run).
    #[arg(long)]
    pub resume: bool,

    /// Most tokens in one forward pass, as the server's --max-batch-tokens.
    #[arg(long, default_value_t = 16384, value_parser = at_least_one)]
    pub max_batch_tokens: usize,

    /// Texts are read in windows of at most this many tokens (and --window-texts texts),
    /// sorted by length within each and encoded in passes; at most four windows are held at
    /// once, which bounds the memory whatever the corpus size.
    #[arg(long, default_value_t = 65536, value_parser = at_least_one)]
    pub window_tokens: usize,

    /// Most texts in one window.
    #[arg(long, default_value_t = 4096, value_parser = at_least_one)]
    pub window_texts: usize,

    /// How progress is shown on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Seconds between two progress lines (`--progress log`).
    #[arg(long, default_value_t = 5.0)]
    pub log_every: f64,

    /// Where to run the model: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,

    /// Precision of the encoder: f32, f16 or bf16 (default: f32 on the CPU, f16 on a GPU).
    #[arg(long, value_parser = bge_m3_core::parse_dtype)]
    pub dtype: Option<DType>,

    /// Threads of the model's forward passes. Default: one per CPU.
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
}

/// `--on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Fail,
    Skip,
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Args {
    fn outputs(&self) -> Outputs {
        let has = |name: &str| self.outputs.iter().any(|o| o == name);
        Outputs {
            dense: has("dense"),
            sparse: has("sparse"),
            colbert: has("colbert"),
        }
    }

    fn input_options(&self) -> InputOptions {
        InputOptions {
            format: self.input_format,
            text_field: self.text_field.clone(),
            id_field: self.id_field.clone(),
            max_text_chars: self.max_text_chars,
        }
    }

    fn log_every(&self) -> Duration {
        Duration::from_secs_f64(self.log_every.max(0.0))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    pipeline::interrupt::install();
    match run(&args) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("bge-m3-encode: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let outputs = args.outputs();
    let format = match (args.output_format, &args.output) {
        (OutputFormat::Auto, Some(path))
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("parquet")) =>
        {
            OutputFormat::Parquet
        }
        (OutputFormat::Auto, _) => OutputFormat::Jsonl,
        (format, _) => format,
    };
    if format == OutputFormat::Parquet && args.output.is_none() {
        return Err("--output-format parquet needs --output FILE".into());
    }
    if args.resume && args.output.is_none() {
        return Err("--resume needs --output FILE (the file to continue)".into());
    }
    let corpus =
        input::Corpus::open(&args.inputs, args.input_options()).map_err(|e| e.to_string())?;

    let options = HubOptions::from_env()
        .with_revision(args.revision.clone())
        .with_progress(bge_m3_core::hub::TerminalProgress);
    let report = |e: bge_m3_core::Error| bge_m3_core::Report(&e).to_string();
    let dir = hub::resolve(&args.model, &options).map_err(report)?;
    let load = LoadOptions::default()
        .with_device(args.device)
        .with_dtype(args.dtype)
        .with_threads(args.threads);
    let model = BgeM3::load(&dir, &load).map_err(report)?;
    if args.max_length == 0 || args.max_length > model.max_length() {
        return Err(format!(
            "--max-length must be within 1..={}",
            model.max_length()
        ));
    }
    let shape = output::Shape {
        outputs,
        sparse: args.sparse_format,
        vocab_size: model.vocab_size(),
    };
    let (sink, done) = open_sink(args, format, shape)?;
    pipeline::run(args, model, corpus, sink, done, shape)
}

type Opened = (Box<dyn output::Sink>, std::collections::HashSet<String>);

fn open_sink(args: &Args, format: OutputFormat, shape: output::Shape) -> Result<Opened, String> {
    let text = |e: std::io::Error| e.to_string();
    let Some(path) = &args.output else {
        return Ok((Box::new(output::Jsonl::stdout()), Default::default()));
    };
    let resume = args.resume && path.exists();
    match format {
        OutputFormat::Parquet => parquet_sink(path, shape, resume),
        _ if resume => {
            let (sink, done) = output::Jsonl::resume(path).map_err(text)?;
            Ok((Box::new(sink), done))
        }
        _ => Ok((
            Box::new(output::Jsonl::create(path).map_err(text)?),
            Default::default(),
        )),
    }
}

#[cfg(feature = "parquet")]
fn parquet_sink(
    path: &std::path::Path,
    shape: output::Shape,
    resume: bool,
) -> Result<Opened, String> {
    let text = |e: std::io::Error| e.to_string();
    if resume {
        let (sink, done) = parquet::Parquet::resume(path, shape).map_err(text)?;
        Ok((Box::new(sink), done))
    } else {
        Ok((
            Box::new(parquet::Parquet::create(path, shape).map_err(text)?),
            Default::default(),
        ))
    }
}

#[cfg(not(feature = "parquet"))]
fn parquet_sink(_: &std::path::Path, _: output::Shape, _: bool) -> Result<Opened, String> {
    Err("this build has no Parquet output: build it with `--features parquet`".into())
}
