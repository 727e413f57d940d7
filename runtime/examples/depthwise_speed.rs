//! Times the 3x3 depthwise convolution at the networks' layer shapes (channels, square
//! map side, stride) on each vector path this CPU has: planar, channels-last (`cl`), and
//! channels-last with the engine's padded pixels (`padded`, `layout::padded_pixel`;
//! the same as `cl` where it adds nothing). Arguments such as `c32 hw112 s2` keep only
//! the lines that contain them all.
use edge_runtime::kernels::depthwise::Depthwise3x3;
use edge_runtime::kernels::isa::Isa;
use edge_runtime::kernels::layout::padded_pixel;
use edge_runtime::kernels::DepthwiseChannelsLast;
use std::time::Instant;
fn main() {
    let shapes = [
        // One plane: the stride-2 kernel with its input in L2, against the layers' 1.6 MB.
        (1, 112, 2),
        (16, 112, 2),
        (32, 112, 2),
        (32, 56, 2),
        (32, 112, 1),
        (64, 56, 1),
        (64, 56, 2),
        (64, 28, 1),
        (64, 28, 2),
        (128, 28, 2),
        (128, 14, 1),
        (128, 14, 2),
        (256, 14, 1),
        (256, 14, 2),
        (256, 7, 1),
        (512, 7, 1),
        (1024, 7, 1),
    ];
    let filter: Vec<String> = std::env::args().skip(1).collect();
    for (c, hw, s) in shapes {
        let g = Depthwise3x3 {
            channels: c,
            height: hw,
            width: hw,
            stride: s,
            relu: true,
        };
        let x: Vec<f32> = (0..g.input_len())
            .map(|i| ((i * 31) % 997) as f32 / 997.0)
            .collect();
        let w: Vec<f32> = (0..c * 9).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        let b = vec![0.1f32; c];
        let mut out = vec![0f32; g.output_len()];
        let mut line = format!("c{c} hw{hw} s{s}:");
        if !filter
            .iter()
            .all(|f| line.split([' ', ':']).any(|word| word == f))
        {
            continue;
        }
        for isa in Isa::ALL
            .into_iter()
            .filter(|isa| *isa != Isa::Scalar && isa.is_available())
        {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let reps = 200;
                let t = Instant::now();
                for _ in 0..reps {
                    g.run_with(isa, &x, &w, &b, &mut out);
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let macs = (g.output_len() * 9) as f64;
            line += &format!(
                "  {isa:?} {:.1} GMAC/s ({:.2} us)",
                macs / best / 1e9,
                best * 1e6
            );
            let last = DepthwiseChannelsLast::new(&w, &b, true);
            for (name, pixel) in [("cl", c), ("padded", padded_pixel(c))] {
                // The values do not matter for the time; the sizes do.
                let x = vec![0.5f32; x.len() / c * pixel];
                let mut out = vec![0f32; out.len() / c * pixel];
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let reps = 200;
                    let t = Instant::now();
                    for _ in 0..reps {
                        last.run(isa, &x, (hw, hw), s, &mut out, (pixel, pixel));
                    }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                line += &format!(" {name} {:.1}", macs / best / 1e9);
            }
        }
        println!("{line}");
    }
}
