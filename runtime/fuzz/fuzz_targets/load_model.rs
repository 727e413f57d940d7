//! Model loading must turn any byte string into a model or an error, never a panic that
//! escapes the runtime, an abort or an unbounded allocation.
#![no_main]

use edge_runtime::{EdgeModel, RuntimeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The runtime turns tract's internal panics into errors (catch_unwind in the loader);
    // libfuzzer-sys' hook would abort on them before they are caught, so it is replaced once
    // by a silent one. A panic that escapes load_bytes still fails the run.
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    // A small fixed input keeps each execution fast; shapes declared inside the model are
    // still checked against the size guard.
    let opts = RuntimeOptions {
        input_shape: Some(vec![1, 3, 16, 16]),
        ..Default::default()
    };
    if let Ok((model, _)) = EdgeModel::load_bytes(data, &opts) {
        let input = edge_runtime::deterministic_input(model.input_shape(), 0);
        let _ = model.run(input);
    }
});
