//! Times the crop kernels on the GPU with CUDA events: ROI-align of 32
//! images x 10 boxes to 3x256x256 at sampling ratio 2 (FP32 and FP16, stretch
//! and pad policies) and the face warp of 64 faces to 3x112x112.
//!
//! `cargo run --release -p cuda-kernels --example gpu_crop_bench` on a GPU
//! machine with NVRTC on the loader's path.

use std::sync::Arc;

use cuda_kernels::cudarc::driver::{sys::CUevent_flags, CudaStream};
use cuda_kernels::{cuda_context, CropDesc, FaceDesc, KernelSet, RoiAlignParams};

const IMAGES: usize = 32;
const BOXES_PER_IMAGE: usize = 10;
const WIDTH: usize = 1280;
const HEIGHT: usize = 960;
const WARMUP: usize = 3;
const RUNS: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = cuda_context(0)?;
    let kernels = KernelSet::compile(&ctx)?;
    let stream = ctx.new_stream()?;
    println!("device: {}", ctx.name()?);

    // Deterministic pixels and boxes; the values do not affect the timing.
    let image_len = WIDTH * HEIGHT * 3;
    let pixels: Vec<u8> = (0..IMAGES * image_len).map(|i| (i * 7 % 251) as u8).collect();
    let images = stream.clone_htod(&pixels)?;
    let mut stretch = Vec::new();
    let mut pad = Vec::new();
    for i in 0..IMAGES {
        for b in 0..BOXES_PER_IMAGE {
            let offset = (i * image_len) as u64;
            let x1 = (b * 97 % 700) as f32 + 0.3;
            let y1 = (b * 53 % 500) as f32 + 0.7;
            let (w, h) = (120.0 + (b * 31 % 400) as f32, 90.0 + (b * 17 % 380) as f32);
            let roi = [x1, y1, x1 + w, y1 + h];
            stretch.push(CropDesc::new(offset, WIDTH as u32, HEIGHT as u32, roi, None));
            let side = w.max(h);
            let (cx, cy) = (x1 + w / 2.0, y1 + h / 2.0);
            let square = [cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0];
            pad.push(CropDesc::new(offset, WIDTH as u32, HEIGHT as u32, square, Some(roi)));
        }
    }
    let crops = stretch.len();
    let params = RoiAlignParams { crop_size: 256, sampling_ratio: 2 };
    let crop_len = 3 * 256 * 256;
    let mut out_f32 = stream.alloc_zeros::<f32>(crops * crop_len)?;
    let mut out_f16 = stream.alloc_zeros::<half::f16>(crops * crop_len)?;
    for (name, descs) in [("stretch", &stretch), ("pad", &pad)] {
        let descs = stream.clone_htod(descs)?;
        let ms = time(&stream, || kernels.launch_roi_align(&stream, &images, &descs, params, &mut out_f32))?;
        report(&format!("roi_align f32 {name}"), crops, ms);
        let ms = time(&stream, || kernels.launch_roi_align(&stream, &images, &descs, params, &mut out_f16))?;
        report(&format!("roi_align f16 {name}"), crops, ms);
    }

    let faces: Vec<FaceDesc> = (0..64)
        .map(|f| FaceDesc {
            image_offset: ((f % IMAGES) * image_len) as u64,
            width: WIDTH as u32,
            height: HEIGHT as u32,
            inverse: [0.9, -0.2, 300.0 + f as f32, 0.2, 0.9, 200.0],
        })
        .collect();
    let faces_dev = stream.clone_htod(&faces)?;
    let mut out_faces = stream.alloc_zeros::<f32>(faces.len() * 3 * 112 * 112)?;
    let ms = time(&stream, || kernels.launch_face_warp(&stream, &images, &faces_dev, 112, &mut out_faces))?;
    report("face_warp f32 112x112", faces.len(), ms);
    Ok(())
}

/// Mean milliseconds per launch between two events around `RUNS` launches.
fn time(
    stream: &Arc<CudaStream>,
    mut launch: impl FnMut() -> Result<(), cuda_kernels::KernelError>,
) -> Result<f32, Box<dyn std::error::Error>> {
    for _ in 0..WARMUP {
        launch()?;
    }
    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..RUNS {
        launch()?;
    }
    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    Ok(start.elapsed_ms(&end)? / RUNS as f32)
}

fn report(name: &str, items: usize, ms: f32) {
    println!("{name}: {items} crops in {ms:.3} ms per launch ({:.0} crops/s)", items as f32 / ms * 1e3);
}
