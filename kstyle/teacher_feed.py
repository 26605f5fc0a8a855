"""An exported teacher's pictures for the training stream, computed ahead of the steps.

A :class:`TeacherFeed` runs a :class:`kstyle.teacher_files.FileTeacher` over a content stream
in a Python thread of its own and hands each ``(images, pictures)`` pair to ``tf.data``
through a TensorFlow FIFO queue. The teacher's runtime releases the GIL while it runs, so it
works beside the training step; the stream that ``fit`` reads holds no Python call. (A
``tf.numpy_function`` inside ``tf.data`` would: an iterator destroyed while such a call waits
for the GIL, as at interpreter exit, hangs the process.)
"""

import threading

import tensorflow as tf

QUEUE_BATCHES = 2  # batches the feed may run ahead of the steps


class TeacherFeed:
    """Pairs each batch of ``dataset`` (float32 (B, H, W, 3) images in [0, 255]) with
    ``teacher``'s pictures of it, in order, from a thread started here. :meth:`dataset` is
    the stream of pairs; :meth:`close` stops the thread and ends the stream, and returns the
    teacher's error, if it failed."""

    def __init__(self, teacher, dataset: tf.data.Dataset):
        self.teacher = teacher
        self.error = None
        self.closed = False
        self.spec = dataset.element_spec
        self.queue = tf.queue.FIFOQueue(QUEUE_BATCHES, [tf.float32, tf.float32])
        self.thread = threading.Thread(target=self._feed, args=(dataset,), daemon=True)
        self.thread.start()

    def _feed(self, dataset) -> None:
        try:
            for images in dataset:
                pictures = self.teacher(images.numpy())
                if self.closed:
                    return
                self.queue.enqueue((images, tf.constant(pictures)))
        except Exception as error:  # the teacher's one-line KstyleError, or the runtime's
            if not self.closed:  # not the enqueue that close() cancelled
                self.error = error
        finally:  # a stream whose content ran out (or failed) ends instead of waiting
            self.queue.close(cancel_pending_enqueues=self.error is not None)

    def dataset(self) -> tf.data.Dataset:
        """The pairs ``(images, pictures)``, as the feed makes them."""
        spec = self.spec

        def take(_):
            images, pictures = self.queue.dequeue()
            return tf.ensure_shape(images, spec.shape), tf.ensure_shape(pictures, spec.shape)

        return tf.data.Dataset.from_tensors(0).repeat().map(take)

    def close(self):
        """Stops the feed and waits for its thread; returns the teacher's error when it
        failed (its stream then ended with an error), else None."""
        self.closed = True
        self.queue.close(cancel_pending_enqueues=True)
        self.thread.join()
        return self.error
