//! Times the first 3x3 stride-2 convolution at the networks' shapes (4 output channels:
//! MobileNet 0.125; 24: ShuffleNet) on each x86 path.
use edge_runtime::kernels::conv3x3s2::PackedConv3x3s2;
use edge_runtime::kernels::isa::Isa;
use std::time::Instant;
fn main() {
    for out_channels in [4, 8, 16, 24, 32] {
        let w: Vec<f32> = (0..out_channels * 27)
            .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let b = vec![0.1f32; out_channels];
        let conv = PackedConv3x3s2::new(&w, &b, 3, out_channels, true);
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i * 31) % 997) as f32 / 997.0)
            .collect();
        let mut out = vec![0f32; out_channels * 112 * 112];
        let mut line = format!("3->{out_channels} at 224x224:");
        for isa in Isa::ALL
            .into_iter()
            .filter(|isa| *isa != Isa::Scalar && isa.is_available())
        {
            let mut best = f64::MAX;
            for _ in 0..10 {
                let reps = 20;
                let t = Instant::now();
                for _ in 0..reps {
                    conv.run_with(isa, &x, 224, 224, &mut out);
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let macs = (out_channels * 112 * 112 * 27) as f64;
            line += &format!(
                "  {isa:?} {:.1} GMAC/s ({:.1} us)",
                macs / best / 1e9,
                best * 1e6
            );
        }
        println!("{line}");
    }
}
