//! Times raw forward passes (encoder plus the dense and sparse heads, [`BgeM3::forward`]) over
//! identical batches of seeded random token ids, and prints one JSON line: tokens per second
//! and peak resident memory. Its PyTorch twin is `bench/torch_forward.py`; `bench/forward.sh`
//! runs both side by side.
//!
//! ```text
//! cargo run --release --example forward -- --model /tmp/bge-m3-full --batch 4 --len 512
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use bge_m3_core::{BgeM3, DeviceSpec, LoadOptions, Outputs};
use clap::Parser;

/// Time `BgeM3::forward` on `batch` random sequences of `len` tokens each.
#[derive(Parser)]
struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per sequence, `<s>` and `</s>` included (no padding: all have this length).
    #[arg(long, default_value_t = 128)]
    len: usize,
    /// Untimed passes before timing.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed passes.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Seed of the token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also compute the ColBERT vectors.
    #[arg(long)]
    colbert: bool,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Encoder precision: f32, f16 or bf16 (default: f32 on CPU, f16 on GPU).
    #[arg(long, value_parser = bge_m3_core::parse_dtype)]
    dtype: Option<bge_m3_core::DType>,
    /// Threads of the model's compute pool (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

/// `<s> ids… </s>` with ids drawn uniformly from the ordinary vocabulary (past `<unk>`, before
/// the last id, which is `<mask>` in XLM-RoBERTa's), from a 64-bit LCG so that the PyTorch
/// twin can draw the same ids.
fn random_sequences(batch: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let span = (vocab - 5) as u64;
    (0..batch)
        .map(|_| {
            let mut seq = Vec::with_capacity(len);
            seq.push(0);
            for _ in 0..len.saturating_sub(2) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                seq.push(4 + ((state >> 33) % span) as u32);
            }
            seq.push(2);
            seq
        })
        .collect()
}

/// `VmHWM` (peak resident set) of this process in MiB, from `/proc/self/status`.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat`; with other work on the machine it tells how much of the wall time was
/// ours.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux architecture this runs on.
    Some(ticks / 100.0)
}

/// Resets `VmHWM` to the current resident set (Linux), so that the peak measured after it is
/// that of the forward passes, not of loading.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.len < 2 || args.batch == 0 || args.iters == 0 {
        return Err("--len must be at least 2, --batch and --iters at least 1".into());
    }
    let model = BgeM3::load(
        &args.model,
        &LoadOptions::default()
            .with_device(args.device)
            .with_dtype(args.dtype)
            .with_threads(args.threads),
    )?;
    let load_peak = peak_rss_mib();
    let sequences = random_sequences(args.batch, args.len, model.vocab_size(), args.seed);
    let batch: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    let outputs = Outputs {
        dense: true,
        sparse: true,
        colbert: args.colbert,
    };
    reset_peak_rss();
    for _ in 0..args.warmup {
        model.forward(&batch, outputs)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    let cpu_start = cpu_seconds();
    for _ in 0..args.iters {
        let start = Instant::now();
        // `forward` copies its results to the host, which synchronises a GPU.
        let out = model.forward(&batch, outputs)?;
        times.push(start.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let cpu = cpu_seconds().zip(cpu_start).map(|(end, start)| end - start);
    let tokens = args.batch * args.len;
    let total: f64 = times.iter().sum();
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let json = serde_json::json!({
        "impl": "candle",
        "device": bge_m3_core::device_name(model.device()),
        "dtype": format!("{:?}", model.dtype()).to_lowercase(),
        "batch": args.batch,
        "len": args.len,
        "tokens": tokens,
        "iters": args.iters,
        "seconds": times,
        "cpu_seconds": cpu,
        "tokens_per_s": tokens as f64 * args.iters as f64 / total,
        "best_tokens_per_s": tokens as f64 / best,
        "peak_rss_mib": peak_rss_mib(),
        "load_peak_rss_mib": load_peak,
    });
    println!("{json}");
    Ok(())
}
