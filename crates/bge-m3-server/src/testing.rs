//! What the unit tests of several modules share: the tiny fixture model, a gate in front of its
//! forward passes, and jobs.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

use bge_m3_core::queue::Forward;
use bge_m3_core::{BgeM3, DeviceSpec, Embedding, EncodeOptions, LoadOptions, Outputs};

use crate::inference::{Batcher, BatcherOptions, EncodeJob, Inputs, SparseKeys};

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
}

impl Gate {
    /// The last id of tiny-pt's vocabulary, a rare piece.
    pub const POISON: u32 = 1201;

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Forward for Gate {
    fn forward(
        &self,
        sequences: &[&[u32]],
        outputs: Outputs,
    ) -> bge_m3_core::Result<Vec<Embedding>> {
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

/// A batcher over the gated tiny model, the gate closed.
pub(crate) fn gated(options: BatcherOptions) -> (Batcher, Arc<Gate>) {
    let gate = Arc::new(Gate {
        model: tiny(),
        open: Mutex::new(false),
        opened: Condvar::new(),
        passes: Mutex::new(Vec::new()),
    });
    let batcher = Batcher::start_with(tiny(), gate.clone(), options).unwrap();
    (batcher, gate)
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
