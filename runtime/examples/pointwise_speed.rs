//! Times the 1x1 convolution at the networks' layer shapes on each x86 path, with the
//! caches warm (the same layer again and again) and cold (another 4 MiB touched between
//! calls, as when a model's other layers run in between). AVX-512 runs twice: with the
//! 6 x 64 pixel tiles (the default) and with the 6 x 32 ones (`EDGE_PIXEL_TILE=32`).
//! Deep layers on maps larger than 7x7, which take the AVX-512 channel panels, run a
//! third time packed for their map size as the engine packs them (64 x 6 panels, "map").
use edge_runtime::kernels::isa::Isa;
use edge_runtime::kernels::pointwise::{Avx512Tiles, PackedPointwise};
use std::time::{Duration, Instant};

fn main() {
    // (depth, output channels, pixels, groups)
    let shapes = [
        (1024, 1024, 49, 1),
        (512, 1024, 49, 1),
        (512, 512, 49, 1),
        (256, 512, 49, 1),
        (256, 256, 49, 1),
        (128, 256, 49, 1),
        (128, 128, 49, 1),
        (64, 128, 49, 1),
        (64, 64, 49, 1),
        (512, 512, 196, 1),
        (256, 256, 196, 1),
        (128, 256, 196, 1),
        (128, 128, 784, 1),
        (64, 128, 784, 1),
        (64, 64, 3136, 1),
        (32, 64, 3136, 1),
        (16, 32, 12544, 1),
        (480, 480, 49, 3),
        (240, 240, 49, 3),
        (120, 120, 49, 3),
        (240, 240, 196, 3),
    ];
    let mut other = vec![1f32; 1 << 20];
    for (k, n, p, g) in shapes {
        let w: Vec<f32> = (0..n * k / g)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let b = vec![0.1f32; n];
        let pp = PackedPointwise::new(&w, &b, g, n / g, k / g, true);
        let for_map = PackedPointwise::for_map(&w, &b, g, n / g, k / g, true, Some(p));
        let x: Vec<f32> = (0..k * p)
            .map(|i| ((i * 31) % 997) as f32 / 997.0)
            .collect();
        let mut out = vec![0f32; n * p];
        let macs = (k / g * n * p) as f64;
        let mut line = format!("k{k} n{n} p{p} g{g}:");
        // Each path, and AVX-512 with both sets of pixel tiles (the same kernel on layers
        // that take the channel panels); the variants take turns call by call, so that
        // a slow spell of a shared machine falls on all of them.
        let mut variants = Vec::new();
        for isa in Isa::ALL {
            if isa == Isa::Scalar || !isa.is_available() {
                continue;
            }
            variants.push((isa, Avx512Tiles::Columns64, &pp, ""));
            if isa == Isa::Avx512 {
                variants.push((isa, Avx512Tiles::Columns32, &pp, " 6x32"));
                if p > 49 && pp.channels_last_capable(isa, p) {
                    variants.push((isa, Avx512Tiles::Columns64, &for_map, " map"));
                }
            }
        }
        for cold in [false, true] {
            let mut times = vec![Vec::new(); variants.len()];
            for _ in 0..200 {
                for (v, &(isa, tiles, pp, _)) in variants.iter().enumerate() {
                    if cold {
                        other.iter_mut().for_each(|v| *v += 1.0);
                        std::hint::black_box(&mut other);
                    }
                    let t = Instant::now();
                    pp.run_with_tiles(isa, tiles, &x, p, &mut out);
                    times[v].push(t.elapsed());
                }
            }
            let label = if cold { "cold" } else { "warm" };
            for ((isa, _, _, tiles), mut times) in variants.iter().zip(times) {
                times.sort();
                let median: Duration = times[times.len() / 2];
                let rate = macs / median.as_secs_f64() / 1e9;
                line += &format!("  {isa:?}{tiles} {label} {rate:.1}");
            }
        }
        println!("{line} (GMAC/s, median)");
    }
    std::hint::black_box(&other);
}
