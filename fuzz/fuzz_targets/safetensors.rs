//! Arbitrary bytes through the safetensors parser: it must return an error or a file whose every
//! tensor can be read (and a model built from it), never panic or read out of bounds.
#![no_main]

use frugal_formats::{GgufFile, NewTensor, SafetensorsFile, TensorBytes};
use frugal_kernels::GgmlType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = SafetensorsFile::from_bytes(data.to_vec(), "fuzz.safetensors") else {
        return;
    };
    let mut built = Vec::new();
    for t in f.tensors() {
        assert_eq!(f.data(t).len(), t.n_bytes);
        let _ = (t.dtype.name(), t.n_elements());
        // Each tensor whose bytes are whole f32 values, borrowed into a built model.
        if t.n_bytes % 4 == 0 && t.n_bytes > 0 {
            built.push(NewTensor {
                name: t.name.clone(),
                dims: vec![(t.n_bytes / 4) as u64],
                ty: GgmlType::F32,
                data: TensorBytes::Borrowed {
                    file: 0,
                    offset: t.offset,
                },
            });
        }
    }
    if let Ok(g) = GgufFile::build("fuzz", std::slice::from_ref(&f), Vec::new(), built) {
        for t in g.tensors() {
            assert_eq!(g.tensor_data(t).len(), t.n_bytes);
        }
    }
});
