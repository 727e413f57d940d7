//! Times the pool-and-classifier head (7x7 map, 1000 classes) with its weights in cache
//! (warm), after 4 MiB of other memory was touched (l3: weights from L3, as inside a
//! model) and after 64 MiB (cold: weights from DRAM or L3).
use edge_runtime::kernels::isa::Isa;
use edge_runtime::kernels::pool_linear::PackedPoolLinear;
use std::time::Instant;

fn main() {
    let mut other = vec![1f32; 16 << 20];
    for channels in [512, 1024] {
        let w: Vec<f32> = (0..channels * 1000)
            .map(|i| ((i * 7) % 13) as f32 / 13.0)
            .collect();
        let b = vec![0.1f32; 1000];
        let head = PackedPoolLinear::new(&w, &b, channels, 1000);
        let x: Vec<f32> = (0..channels * 49)
            .map(|i| ((i * 31) % 997) as f32 / 997.0)
            .collect();
        let mut out = vec![0f32; 1000];
        let mut line = format!("{channels} -> 1000:");
        for (label, touched) in [("warm", 0), ("l3", 1 << 20), ("cold", other.len())] {
            let mut times = Vec::new();
            for _ in 0..100 {
                if touched > 0 {
                    other[..touched].iter_mut().for_each(|v| *v += 1.0);
                    std::hint::black_box(&mut other);
                }
                let t = Instant::now();
                head.run_with(Isa::best(), &x, 49, &mut out);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            line += &format!("  {label} {:.1} us", times[50]);
        }
        println!("{line} (median)");
    }
    std::hint::black_box(&other);
}
