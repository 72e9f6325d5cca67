//! `bge-m3-encode`: encodes a whole corpus with BGE-M3 on this machine, through the same model
//! queue (and so the same scheduling policy) as the server.
//!
//! ```text
//! bge-m3-encode --model fixtures/models/tiny-pt corpus.jsonl -o vectors.jsonl
//! ```
//!
//! A corpus split over N runs: `--shard I/N` in each ([`shard`]), then `bge-m3-encode verify
//! OUT...` on their outputs ([`verify`]).

mod guard;
mod ids;
mod input;
mod lines;
mod manifest;
mod open;
mod output;
#[cfg(feature = "parquet")]
mod parquet;
mod pipeline;
mod progress;
mod resume;
mod shard;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bge_m3_core::hub::{self, HubOptions};
use bge_m3_core::{BgeM3, DType, DeviceSpec, LoadOptions, Outputs, SparseFormat};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Parser;

use guard::Written;
use ids::RepeatedIds;
use input::{InputFormat, InputOptions};
use open::{is_file, open_file, shaping_options, written};
use output::OutputFormat;
use pipeline::Start;
use progress::ProgressMode;
use shard::Shard;

/// Encode a corpus with BGE-M3: JSONL, text lines or a directory of .txt/.md files in; dense,
/// sparse and ColBERT vectors out, one record per input in input order, as JSONL or Parquet.
#[derive(Debug, Parser)]
#[command(version, disable_help_subcommand = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

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
    #[arg(long, default_value_t = SparseFormat::Indices, value_parser = sparse_format())]
    pub sparse_format: SparseFormat,

    /// Truncate texts to this many tokens, `<s>` and `</s>` included (1..=8192).
    #[arg(long, default_value_t = 8192)]
    pub max_length: usize,

    /// A longer text is a bad record (see --on-error), as the server refuses it. A line is
    /// read no further than such a text can take (4 bytes a character in a text file, 12 in
    /// JSON plus 1 MiB for the other fields), so an oversized line costs no memory.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_text_chars: usize,

    /// What to do with a bad record (invalid JSON, no text field, a text over
    /// --max-text-chars, a repeated id with --unique-ids): `fail` stops after writing the
    /// records before it (exit status 1); `skip` reports it with its line and goes on.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,

    /// Make a record whose id repeats an earlier record's a bad record (see --on-error).
    /// Without it, such records are written and the summary counts them, naming the first.
    /// Ids are compared as text (`7` and `"7"` are the same id).
    #[arg(long)]
    pub unique_ids: bool,

    /// Most distinct ids kept to find repeated ones (about 15 bytes each, 22 at peak: 144 MiB
    /// for the default's 10 million). Past it, later ids are not checked: the summary says
    /// so, and --unique-ids stops the run (raise it and --resume). 0: no check.
    #[arg(long, default_value_t = ids::DEFAULT_LIMIT)]
    pub max_tracked_ids: usize,

    /// Continue an interrupted run from where --output stops (its manifest,
    /// OUTPUT.manifest.json, says where): the input up to there must be the one it was
    /// encoded from, and the options that shape the output (model, --dtype, --max-length,
    /// --outputs, --sparse-format, --text-field, --id-field, --input-format) those of the
    /// first run.
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

    /// Precision of the encoder: f32, f16, bf16 or int8 (int8: the CPU only, faster in a third
    /// of the memory, close to f32; default: f32 on the CPU, f16 on a GPU).
    #[arg(long, value_parser = bge_m3_core::parse_dtype)]
    pub dtype: Option<DType>,

    /// Threads of the model's forward passes. Default: one per CPU.
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,

    /// Encode only shard I of N (0 <= I < N): the records whose position in the corpus
    /// (0-based, bad records counted, blank lines not) is I modulo N. Every shard reads the
    /// whole input; run the N shards into N outputs, then check them with `bge-m3-encode
    /// verify`. The shard is recorded in the manifest, and --resume continues only the same
    /// shard.
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    pub shard: Option<Shard>,
}

/// What `bge-m3-encode` does besides encoding.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check that a set of outputs (the N shards of one corpus, or one whole output) is
    /// complete and consistent before loading it: reads their manifests and the ends of the
    /// files; prints a summary; exit status 0 if so, 1 naming every problem if not. The
    /// encoding options are not used. (An input file named `verify` is written `./verify`.)
    Verify(verify::VerifyArgs),
}

/// `--on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Fail,
    Skip,
}

/// `--sparse-format`: the core's formats, each listed with its meaning in `--help`.
fn sparse_format() -> impl TypedValueParser<Value = SparseFormat> {
    let values = SparseFormat::ALL.map(|f| PossibleValue::new(f.name()).help(f.description()));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<SparseFormat>())
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
    if let Some(Command::Verify(verify)) = &args.command {
        return verify::run(verify);
    }
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
    if args.unique_ids && args.max_tracked_ids == 0 {
        return Err("--unique-ids needs --max-tracked-ids above 0 (the ids it checks)".into());
    }
    let mut corpus =
        input::Corpus::open(&args.inputs, args.input_options()).map_err(|e| e.to_string())?;
    // Before anything is opened for writing: no output may be an input.
    let file = args.output.as_deref().filter(|path| is_file(path));
    if let Some(path) = file {
        guard::check(corpus.files(), &written(path, format)?)?;
    } else if let Some(path) = &args.output {
        guard::check(
            corpus.files(),
            &[Written {
                path: path.clone(),
                what: "--output",
            }],
        )?;
        if args.resume || format == OutputFormat::Parquet {
            return Err(format!(
                "{}: not a regular file: --resume and Parquet need one",
                path.display()
            ));
        }
    }

    let options = HubOptions::from_env()
        .with_revision(args.revision.clone())
        .with_progress(bge_m3_core::hub::TerminalProgress);
    let report = |e: bge_m3_core::Error| bge_m3_core::Report(&e).to_string();
    let load = LoadOptions::default()
        .with_device(args.device)
        .with_dtype(args.dtype)
        .with_threads(args.threads);
    // Before a download: `--dtype int8 --device cuda` is refused without fetching the model.
    load.check().map_err(report)?;
    let dir = hub::resolve(&args.model, &options).map_err(report)?;
    let model = BgeM3::load(&dir, &load).map_err(report)?;
    // The core's rule, in the encoder's words.
    bge_m3_core::check_length("--max-length", args.max_length, model.max_length())
        .map_err(|_| format!("--max-length must be within 1..={}", model.max_length()))?;
    let shape = output::Shape {
        outputs,
        sparse: args.sparse_format,
        vocab_size: model.vocab_size(),
    };
    let ids = RepeatedIds::new(args.max_tracked_ids);
    let start = match file {
        None => {
            let sink: Box<dyn output::Sink> = match &args.output {
                None => Box::new(output::Jsonl::stdout()),
                Some(path) => Box::new(output::Jsonl::create(path, false).map_err(text)?),
            };
            Start {
                sink,
                ledger: None,
                ids,
                repeated: 0,
                repeats: Vec::new(),
            }
        }
        Some(path) => {
            let options = shaping_options(args, &dir, &model).map_err(text)?;
            open_file(args, path, format, shape, options, &mut corpus, ids)?
        }
    };
    pipeline::run(args, model, corpus, start, shape)
}

fn text(error: std::io::Error) -> String {
    error.to_string()
}
