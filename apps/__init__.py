"""Applications on top of the model: video search and the demo (publishing and the Inference Endpoints handler are
the library's: `clip2video.pipelines.publishing`)."""
