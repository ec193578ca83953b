//! The objects a query photo holds, without storing it: what the page shows so a person can
//! pick one of them for region search. The stored record answers for bytes already ingested
//! (no Triton call); otherwise the ingest model detects them, as ingest would.

use bytes::Bytes;
use visual_store::Store;

use crate::api::{DetectResponse, ObjectView};
use crate::blobs::content_id;
use crate::inference::Inference;
use crate::service::ServiceError;

pub async fn objects(
    store: &dyn Store,
    inference: &dyn Inference,
    class_names: &[String],
    image: Bytes,
) -> Result<DetectResponse, ServiceError> {
    let id = content_id(&image);
    if let Some(record) = store.get(&id).await? {
        let view = crate::api::ImageView::from(&record);
        return Ok(DetectResponse {
            image_id: Some(id),
            width: view.width,
            height: view.height,
            objects: view.objects,
        });
    }
    let analysis = inference.analyze_image(image).await?;
    let objects = analysis
        .detections
        .into_iter()
        .enumerate()
        .map(|(index, d)| ObjectView {
            index,
            class_id: d.class_id,
            // The inference layer lets through only ids inside the class list.
            class_name: class_names[d.class_id as usize].clone(),
            confidence: d.confidence,
            bbox: d.bbox,
        })
        .collect();
    Ok(DetectResponse { image_id: None, width: analysis.width, height: analysis.height, objects })
}
