//! The scheduling policy against a recording stand-in for the model.

use super::*;

/// Records the passes it is given and answers each text with its length as `tokens`.
#[derive(Default)]
struct Recorder {
    passes: Mutex<Vec<Vec<usize>>>,
}

impl Forward for Recorder {
    fn forward(&self, sequences: &[&[u32]], _outputs: Outputs) -> crate::Result<Vec<Embedding>> {
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        if lengths.contains(&13) {
            panic!("13 is unlucky");
        }
        self.passes.lock().unwrap().push(lengths.clone());
        Ok(lengths
            .into_iter()
            .map(|len| Embedding {
                tokens: len,
                ..Embedding::default()
            })
            .collect())
    }

    fn pads_batches(&self) -> bool {
        true
    }
}

fn request(
    lengths: &[usize],
    batch_size: usize,
) -> (Request, oneshot::Receiver<Result<Computed, QueueError>>) {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        sequences: lengths.iter().map(|&len| vec![0; len]).collect(),
        outputs: Outputs::default(),
        batch_size: batch_size.try_into().expect("a batch size of at least 1"),
        reply,
    };
    (request, answer)
}

fn state_with(requests: Vec<Request>) -> State {
    let mut state = State::default();
    for request in requests {
        state.add(request);
    }
    state
}

fn lengths(pass: &Pass) -> Vec<usize> {
    pass.sequences.iter().map(Vec::len).collect()
}

#[test]
fn passes_are_seeded_in_turn_and_filled_under_the_budget() {
    let (long, _a) = request(&[100, 100, 100], 12);
    let (short, _b) = request(&[5, 7, 6], 12);
    let mut state = state_with(vec![long, short]);
    // Budget 210: a pass of 100-token texts holds two of them.
    let first = state.next_pass(210, true).unwrap();
    assert_eq!(lengths(&first), [100, 100]);
    // The short request seeds the next pass although the long one still waits: no starving.
    let second = state.next_pass(210, true).unwrap();
    assert_eq!(lengths(&second), [7, 6, 5]);
    let third = state.next_pass(210, true).unwrap();
    assert_eq!(lengths(&third), [100]);
    assert!(state.next_pass(210, true).is_none());
}

#[test]
fn a_pass_takes_the_longest_texts_no_longer_than_its_seed() {
    let (a, _a) = request(&[10, 3], 12);
    let (b, _b) = request(&[50, 9, 10, 2], 12);
    let mut state = state_with(vec![a, b]);
    let pass = state.next_pass(30, true).unwrap();
    // Seed 10 (request a); room for 3 texts of 10: the other 10, then 9.
    assert_eq!(lengths(&pass), [10, 10, 9]);
    assert_eq!(pass.padded_tokens, 30);
}

#[test]
fn short_texts_share_a_padded_pass_seeded_by_a_shorter_one() {
    // 16 queries of 10-28 tokens, one per request: one pass, padded to the longest.
    let requests: Vec<_> = (0..16).map(|i| request(&[10 + (i * 9) % 21], 12)).collect();
    let (requests, _answers): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
    let mut state = state_with(requests);
    let pass = state.next_pass(16384, true).unwrap();
    assert_eq!(pass.sequences.len(), 16);
    assert_eq!(pass.padded_tokens, 16 * 28);
    assert!(state.next_pass(16384, true).is_none());
    // Past SHORT_TEXT_TOKENS, a shorter seed still takes only texts up to its own length.
    let (a, _a) = request(&[20], 12);
    let (b, _b) = request(&[SHORT_TEXT_TOKENS + 1, 20, 5], 12);
    let mut state = state_with(vec![a, b]);
    assert_eq!(lengths(&state.next_pass(16384, true).unwrap()), [20, 20, 5]);
}

#[test]
fn end_to_end_passes_count_real_tokens_and_take_any_length() {
    let (long, _a) = request(&[100, 100, 100], 12);
    let (short, _b) = request(&[5, 70, 6], 12);
    let mut state = state_with(vec![long, short]);
    // Budget 210: the seed (100), another 100, then what still fits of the short request
    // (70 and 6, 5 is the longest first order; only 6 fits).
    let first = state.next_pass(210, false).unwrap();
    assert_eq!(lengths(&first), [100, 100, 6]);
    assert_eq!(first.padded_tokens, 206);
    // The short request seeds the next pass (its 70), and the last 100 fits too.
    let second = state.next_pass(210, false).unwrap();
    assert_eq!(lengths(&second), [100, 70, 5]);
    assert!(state.next_pass(210, false).is_none());
}

#[test]
fn end_to_end_passes_merge_waiting_queries_and_respect_batch_size() {
    let requests: Vec<_> = (0..16).map(|i| request(&[10 + i], 12)).collect();
    let (requests, _answers): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
    let mut state = state_with(requests);
    let pass = state.next_pass(16384, false).unwrap();
    assert_eq!(pass.sequences.len(), 16);
    assert_eq!(pass.padded_tokens, (10..26).sum::<usize>());
    let (a, _a) = request(&[4, 4, 4, 4, 4], 2);
    let mut state = state_with(vec![a]);
    assert_eq!(lengths(&state.next_pass(100, false).unwrap()), [4, 4]);
    // A text over the budget runs alone.
    let (b, _b) = request(&[500, 3], 12);
    let mut state = state_with(vec![b]);
    assert_eq!(lengths(&state.next_pass(100, false).unwrap()), [500]);
    assert_eq!(lengths(&state.next_pass(100, false).unwrap()), [3]);
}

#[test]
fn a_text_over_the_budget_runs_alone_and_batch_size_caps_a_request() {
    let (a, _a) = request(&[500, 4, 4, 4, 4], 2);
    let mut state = state_with(vec![a]);
    assert_eq!(lengths(&state.next_pass(100, true).unwrap()), [500]);
    assert_eq!(lengths(&state.next_pass(100, true).unwrap()), [4, 4]);
    assert_eq!(lengths(&state.next_pass(100, true).unwrap()), [4, 4]);
}

#[test]
fn cancelled_requests_are_dropped_before_the_next_pass() {
    let (a, answer) = request(&[8, 8], 12);
    let (b, _b) = request(&[3], 12);
    let mut state = state_with(vec![a, b]);
    drop(answer);
    let pass = state.next_pass(1000, true).unwrap();
    assert_eq!(lengths(&pass), [3]);
    assert_eq!(state.jobs.len(), 1);
}

#[test]
fn results_come_back_in_order_with_their_timings() {
    let queue = Queue::spawn(Arc::new(Recorder::default()), 64, Arc::new(())).unwrap();
    let (a, answer) = request(&[2, 9, 4], 12);
    queue.push(a);
    let computed = answer.blocking_recv().unwrap().unwrap();
    let tokens: Vec<usize> = computed.embeddings.iter().map(|e| e.tokens).collect();
    assert_eq!(tokens, [2, 9, 4]);
    assert!(computed.inference > Duration::ZERO);
}

#[test]
fn a_failing_pass_fails_its_requests_only_and_the_worker_goes_on() {
    let recorder = Arc::new(Recorder::default());
    let queue = Queue::spawn(recorder.clone(), 20, Arc::new(())).unwrap();
    // Budget 20 holds one 13-token text: the panicking pass holds request a alone.
    let (a, a_answer) = request(&[13], 12);
    let (b, b_answer) = request(&[3, 4], 12);
    queue.push(a);
    queue.push(b);
    let failed = a_answer.blocking_recv().unwrap();
    assert!(
        matches!(&failed, Err(QueueError::PassFailed(m)) if m.to_string().contains("13 is unlucky")),
        "{failed:?}"
    );
    let served = b_answer.blocking_recv().unwrap().unwrap();
    assert_eq!(served.embeddings.len(), 2);
    let (c, c_answer) = request(&[5], 12);
    queue.push(c);
    assert_eq!(
        c_answer.blocking_recv().unwrap().unwrap().embeddings[0].tokens,
        5
    );
}

/// A pass whose model returns an error fails its requests with that error as the source, not
/// its text: a server can log the whole chain and tell the client only that the pass failed.
#[test]
fn a_failed_pass_keeps_the_models_error_as_its_source() {
    struct Failing;
    impl Forward for Failing {
        fn forward(&self, _: &[&[u32]], _: Outputs) -> crate::Result<Vec<Embedding>> {
            Err(crate::Error::Device {
                message: "out of device memory".into(),
                source: None,
            })
        }
        fn pads_batches(&self) -> bool {
            true
        }
    }
    let queue = Queue::spawn(Arc::new(Failing), 64, Arc::new(())).unwrap();
    let (a, answer) = request(&[3], 12);
    queue.push(a);
    let failed = answer.blocking_recv().unwrap().unwrap_err();
    assert_eq!(failed.to_string(), "the forward pass failed");
    let source = std::error::Error::source(&failed).expect("the pass's failure");
    assert!(
        matches!(
            source.downcast_ref::<PassFailure>(),
            Some(PassFailure::Model(crate::Error::Device { message, .. }))
                if message == "out of device memory"
        ),
        "{source:?}"
    );
    assert_eq!(
        crate::Report(&failed).to_string(),
        "the forward pass failed: device: out of device memory"
    );
}

#[test]
fn a_closed_queue_answers_what_it_holds_then_refuses() {
    let queue = Queue::spawn(Arc::new(Recorder::default()), 64, Arc::new(())).unwrap();
    let (a, answer) = request(&[3], 12);
    queue.push(a);
    queue.close();
    assert!(answer.blocking_recv().unwrap().is_ok());
    let (b, refused) = request(&[3], 12);
    queue.push(b);
    assert!(matches!(
        refused.blocking_recv().unwrap(),
        Err(QueueError::Closed)
    ));
}

#[test]
fn pruning_drops_the_requests_whose_client_has_gone_at_once() {
    // No worker runs: only `prune` can take the request off the queue.
    let (queue, _worker) = queue(64, Arc::new(()));
    let (a, gone) = request(&[8, 8], 12);
    let (b, _b) = request(&[3], 12);
    queue.push(a);
    queue.push(b);
    drop(gone);
    queue.prune();
    let state = lock(&queue.shared.state);
    assert_eq!(state.jobs.len(), 1);
    assert_eq!(state.waiting_texts(), 1);
}
