//! Arbitrary bytes through the GGUF parser: it must return an error or a file whose every tensor
//! can be read and dequantized, never panic or read out of bounds.
#![no_main]

use frugal_formats::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else {
        return;
    };
    for (k, v) in g.metadata() {
        let _ = (k.len(), v.type_name(), v.as_u64(), v.as_f32(), v.as_str());
    }
    for t in g.tensors() {
        let bytes = g.tensor_data(t);
        assert_eq!(bytes.len(), t.n_bytes);
        // Dequantize the first row (bounded work per input).
        let cols = t.cols().min(1 << 16);
        if cols == t.cols() {
            if let Some(row) = t.ty.row_bytes(cols) {
                let mut out = vec![0.0f32; cols];
                frugal_kernels::dequant::dequantize_row(t.ty, &bytes[..row], &mut out);
            }
        }
    }
});
