//! Model loading must turn any byte string into a model or an error, never a panic, an
//! abort or an unbounded allocation.
#![no_main]

use edge_runtime::{EdgeModel, RuntimeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
