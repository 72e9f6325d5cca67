//! What the unit tests of several modules share: the tiny fixture model, a gate in front of its
//! forward passes, and jobs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bge_m3_core::queue::{Forward, Observer, PassReport};
use bge_m3_core::{BgeM3, DeviceSpec, Embedding, EncodeOptions, LoadOptions, Outputs};

use crate::inference::{EncodeJob, Inference, InferenceOptions, Inputs, QueueMetrics, SparseKeys};

pub(crate) fn tiny() -> Arc<BgeM3> {
    static MODEL: OnceLock<Arc<BgeM3>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
            let options = LoadOptions::default()
                .with_device(DeviceSpec::Cpu)
                .with_dtype(None);
            Arc::new(BgeM3::load(dir, &options).expect("loading tiny-pt"))
        })
        .clone()
}

/// The tiny model behind a gate: passes wait until [`Gate::open`]; the input made of
/// [`Gate::POISON`] alone makes its pass panic.
pub(crate) struct Gate {
    pub model: Arc<BgeM3>,
    pub open: Mutex<bool>,
    pub opened: Condvar,
    /// The number of sequences of each pass run so far.
    pub passes: Mutex<Vec<usize>>,
    /// The number of sequences of each pass that reached the gate, open or not.
    pub arrived: Mutex<Vec<usize>>,
    /// Texts waiting on the queue for a pass, as the queue last reported.
    pub waiting: AtomicUsize,
}

impl Gate {
    /// The last id of tiny-pt's vocabulary, a rare piece.
    pub const POISON: u32 = 1201;

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Texts of passes that reached the gate.
    pub fn arrived_texts(&self) -> usize {
        self.arrived.lock().unwrap().iter().sum()
    }

    /// Waits until `texts` texts are on the queue or at the gate: every request sent so far
    /// has been tokenized and queued. Panics after 30 s.
    pub async fn until_queued(&self, texts: usize) {
        until(|| self.arrived_texts() + self.waiting.load(Ordering::SeqCst) >= texts).await;
    }

    /// Waits until a pass of `texts` or more texts has reached the gate. Panics after 30 s.
    pub async fn until_arrived(&self, texts: usize) {
        until(|| self.arrived_texts() >= texts).await;
    }
}

/// The queue's count of waiting texts, kept by the gate; every report also goes to the metrics,
/// as a inference's do.
struct Watch(Arc<Gate>);

impl Observer for Watch {
    fn waiting_texts(&self, texts: usize) {
        self.0.waiting.store(texts, Ordering::SeqCst);
        QueueMetrics.waiting_texts(texts);
    }

    fn pass(&self, pass: &PassReport<'_>) {
        QueueMetrics.pass(pass);
    }

    fn restarted(&self) {
        QueueMetrics.restarted();
    }
}

/// Polls `done` until it holds, yielding to the runtime in between (the requests awaited run
/// on it); panics after 30 s.
async fn until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the requests were not queued within 30 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Forward for Gate {
    fn forward(
        &self,
        sequences: &[&[u32]],
        outputs: Outputs,
    ) -> bge_m3_core::Result<Vec<Embedding>> {
        self.arrived.lock().unwrap().push(sequences.len());
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        if sequences.iter().any(|s| s[1..] == [Self::POISON, 2]) {
            panic!("poisoned pass");
        }
        self.passes.lock().unwrap().push(sequences.len());
        self.model.forward(sequences, outputs)
    }

    fn pads_batches(&self) -> bool {
        self.model.pads_batches()
    }
}

/// A inference over the gated tiny model, the gate closed.
pub(crate) fn gated(options: InferenceOptions) -> (Inference, Arc<Gate>) {
    let gate = Arc::new(Gate {
        model: tiny(),
        open: Mutex::new(false),
        opened: Condvar::new(),
        passes: Mutex::new(Vec::new()),
        arrived: Mutex::new(Vec::new()),
        waiting: AtomicUsize::new(0),
    });
    let inference =
        Inference::start_observed(tiny(), gate.clone(), options, Arc::new(Watch(gate.clone())))
            .unwrap();
    (inference, gate)
}

pub(crate) fn job(inputs: Inputs, outputs: Outputs, max_length: usize) -> EncodeJob {
    EncodeJob {
        inputs,
        options: EncodeOptions::default()
            .with_outputs(outputs)
            .with_max_length(max_length)
            .with_batch_size(12),
        sparse_keys: SparseKeys::Tokens,
    }
}
