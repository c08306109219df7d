//! Tests of `multipart.rs`: recorded multipart uploads and their parts, and abandoned uploads.

use super::tests::*;
use super::*;

#[test]
fn multipart_progress_is_recorded_and_cleared_with_the_upload() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 25 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let part = |number| StoredPart {
        number,
        size: 5 << 20,
        etag: format!("\"e{number}\""),
        md5: "00".repeat(16),
    };
    assert!(q
        .start_upload(1, 1, "upload-1", 5 << 20, Some("sha"))
        .unwrap());
    assert!(q.record_part(1, 1, &part(1)).unwrap());
    assert!(q.record_part(1, 1, &part(3)).unwrap());
    assert!(
        !q.record_part(1, 7, &part(2)).unwrap(),
        "not with another claim"
    );
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (
            row.upload_id.as_deref(),
            row.part_size,
            row.sha256.as_deref()
        ),
        (Some("upload-1"), Some(5 << 20), Some("sha"))
    );
    assert_eq!(q.progress(&row).unwrap(), Some((2, 5)));
    assert_eq!(
        q.parts(1)
            .unwrap()
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(q.recorded_uploads().unwrap()[0].upload_id, "upload-1");
    // A transient failure keeps the upload for the next attempt.
    q.retry_later(Ended::unsent(1, 1), "503", 20, 11).unwrap();
    let again = q.claim(1, 20, Duration::from_secs(60)).unwrap().remove(0);
    assert_eq!(again.upload_id.as_deref(), Some("upload-1"));
    assert_eq!(q.parts(1).unwrap().len(), 2);
    // Done: the upload and its parts are gone from the queue.
    assert!(q.mark_done(1, 2, &delivered("e-5"), None, 30).unwrap());
    let done = q.get(1).unwrap().unwrap();
    assert_eq!((done.upload_id, q.parts(1).unwrap().len()), (None, 0));
    assert!(q.recorded_uploads().unwrap().is_empty());
    let asked = ["k/big-1".to_string(), "k/other".to_string()];
    let known = q.known_keys("lake", &asked).unwrap();
    assert_eq!(known, ["k/big-1".to_string()].into_iter().collect());
    assert!(q.known_keys("elsewhere", &asked).unwrap().is_empty());
}

#[test]
fn starting_over_forgets_old_parts() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 10 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.start_upload(1, 1, "u1", 5 << 20, Some("sha")).unwrap();
    q.record_part(
        1,
        1,
        &StoredPart {
            number: 1,
            size: 5 << 20,
            etag: "e".into(),
            md5: "00".repeat(16),
        },
    )
    .unwrap();
    assert!(q.forget_upload(1, 1).unwrap());
    let row = q.get(1).unwrap().unwrap();
    assert_eq!((row.upload_id, q.parts(1).unwrap().len()), (None, 0));
    q.start_upload(1, 1, "u2", 5 << 20, Some("sha")).unwrap();
    assert!(q
        .mark_failed(Ended::unsent(1, 1), "gone", Failure::Refused, 11)
        .unwrap());
    assert!(q.get(1).unwrap().unwrap().upload_id.is_none());
}

#[test]
fn a_file_rewritten_while_pending_does_not_resume_the_old_upload() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 25 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.start_upload(1, 1, "old-upload", 5 << 20, Some("old-sha"))
        .unwrap();
    q.record_part(
        1,
        1,
        &StoredPart {
            number: 1,
            size: 5 << 20,
            etag: "e".into(),
            md5: "00".repeat(16),
        },
    )
    .unwrap();
    q.retry_later(Ended::unsent(1, 1), "503", 20, 11).unwrap();
    // Rewritten and settled again before the next attempt.
    assert_eq!(
        register(&mut q, &[file("big", 30 << 20)], 12),
        vec![Registered::AlreadyQueued(1)]
    );
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(row.stamp.size, 30 << 20);
    assert_eq!(
        (row.upload_id, row.part_size, row.sha256),
        (None, None, None)
    );
    assert!(q.parts(1).unwrap().is_empty());
}

#[test]
fn an_upload_no_row_needs_any_more_is_listed_for_aborting() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    assert!(q.start_upload(1, 1, "up-1", 5 << 20, Some("sha")).unwrap());
    q.retry_later(Ended::unsent(1, 1), "SlowDown", 11, 11)
        .unwrap();
    // Rewritten before the upload ended: the row starts over, its upload is abandoned.
    register(&mut q, &[file("a", 2)], 12);
    assert_eq!(q.get(1).unwrap().unwrap().upload_id, None);
    let abandoned = q.abandoned_uploads(10).unwrap();
    assert_eq!(
        abandoned,
        vec![multipart::AbandonedUpload {
            upload_id: "up-1".into(),
            destination: "lake".into(),
            bucket: "acme".into(),
            key: "k/a-1".into(),
        }]
    );
    q.forget_abandoned("up-1").unwrap();
    assert!(q.abandoned_uploads(10).unwrap().is_empty());
}
