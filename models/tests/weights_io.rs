//! safetensors round trip and bad weight files.

use model_zoo::export::model_safetensors_bytes;
use model_zoo::{export_models, find_model, model_onnx_bytes, ExportOptions, ZooError};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

const NAME: &str = "fd_mobilenet_0.25";

fn opts_with(path: &Path) -> ExportOptions {
    ExportOptions {
        weights: Some(path.to_path_buf()),
        resolution: 96,
        ..Default::default()
    }
}

#[test]
fn round_trip_gives_identical_onnx() {
    let dir = tempfile::tempdir().unwrap();
    for name in [NAME, "shufflenet_g3_0.25"] {
        let model = find_model(name).unwrap();
        let opts = ExportOptions {
            resolution: 96,
            ..Default::default()
        };
        let st = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&st, model_safetensors_bytes(&model, &opts).unwrap()).unwrap();
        for fold_bn in [false, true] {
            let generated = model_onnx_bytes(
                &model,
                &ExportOptions {
                    fold_bn,
                    ..opts.clone()
                },
            )
            .unwrap();
            let imported = model_onnx_bytes(
                &model,
                &ExportOptions {
                    fold_bn,
                    ..opts_with(&st)
                },
            )
            .unwrap();
            assert!(generated == imported, "{name} fold_bn={fold_bn}");
        }
    }
}

/// The generated state dict as (name -> (shape, f32 bytes)), to build bad files from.
fn state_dict() -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes =
        model_safetensors_bytes(&find_model(NAME).unwrap(), &ExportOptions::default()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn write(path: &Path, dict: &BTreeMap<String, (Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView)> = dict
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

/// Export must fail with a message naming the file, and write nothing.
fn export_error(file: &Path) -> String {
    let out = file.parent().unwrap().join("out");
    let err = export_models(&out, Some(&[NAME.to_string()]), &opts_with(file)).unwrap_err();
    assert!(
        matches!(err, ZooError::Weights { .. } | ZooError::Io { .. }),
        "{err:?}"
    );
    assert!(!out.exists(), "something was written for a bad weight file");
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn renamed_tensor_is_reported_as_missing_and_unexpected() {
    let dir = tempfile::tempdir().unwrap();
    let mut dict = state_dict();
    let t = dict.remove("features.pw_conv_3.weight").unwrap();
    dict.insert("features.pw_conv3.weight".into(), t);
    // PyTorch's BatchNorm step counters are tolerated.
    dict.insert(
        "features.norm_0.num_batches_tracked".into(),
        (vec![], vec![0; 4]),
    );
    let file = dir.path().join("renamed.safetensors");
    write(&file, &dict);
    let msg = export_error(&file);
    assert!(
        msg.contains("missing tensors: features.pw_conv_3.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("unexpected tensors: features.pw_conv3.weight"),
        "{msg}"
    );
    assert!(!msg.contains("num_batches_tracked"), "{msg}");
}

#[test]
fn wrong_shape_is_reported_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut dict = state_dict();
    let (shape, data) = dict["classifier.weight"].clone();
    assert_eq!(shape, vec![1000, 256]);
    dict.insert("classifier.weight".into(), (vec![256, 1000], data));
    let file = dir.path().join("shape.safetensors");
    write(&file, &dict);
    let msg = export_error(&file);
    assert!(
        msg.contains("classifier.weight [256, 1000] (expected [1000, 256])"),
        "{msg}"
    );
}

#[test]
fn truncated_and_missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("truncated.safetensors");
    write(&file, &state_dict());
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let msg = export_error(&file);
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
    let msg = export_error(&dir.path().join("absent.safetensors"));
    assert!(msg.contains("absent.safetensors"), "{msg}");
}

#[test]
fn weights_need_a_single_model() {
    let dir = tempfile::tempdir().unwrap();
    let err = export_models(dir.path(), None, &opts_with(Path::new("x.safetensors"))).unwrap_err();
    assert!(err.to_string().contains("--only"), "{err}");
}
