"""The API's answers as pydantic models: they document the responses in the OpenAPI schema.
The handlers build plain dicts of the same shape (no per-request validation of our own
output), and the tests check the dicts against these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from fmnist.core.spec import IMAGE_SIZE

PIXELS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": IMAGE_SIZE,
    "maxItems": IMAGE_SIZE,
    "items": {
        "type": "array",
        "minItems": IMAGE_SIZE,
        "maxItems": IMAGE_SIZE,
        "items": {"type": "number", "minimum": 0, "maximum": 255},
    },
    "description": "28 rows of 28 grey levels, 0 (black background) to 255 (the garment at its lightest)",
}


class ClassScore(BaseModel):
    label: int = Field(description="Class number, 0-9")
    name: str = Field(description="Class name, e.g. 'Ankle boot'")
    probability: float = Field(
        description="Calibrated probability, 0-1: softmax(logits / temperature), the temperature fitted on the "
        "validation split (the model card's `temperature`; 1 means the raw softmax)"
    )


class Answer(BaseModel):
    predicted: int = Field(description="The most likely class")
    predicted_name: str
    confidence: float = Field(description="Calibrated probability of the predicted class")
    top: list[ClassScore] = Field(description="The top_k most likely classes, best first")
    model_input_png: str | None = Field(
        None, description="For uploaded images: the 28×28 image the model saw, as a PNG data URL"
    )


class PredictResponse(Answer):
    model: str = Field(description="The model's architecture name")
    backend: str = Field(description="onnx (ONNX Runtime) or torch (PyTorch)")
    inference_ms: float = Field(description="The model's time for this request, in milliseconds")


class BatchResponse(BaseModel):
    model: str
    backend: str
    inference_ms: float = Field(description="The model's time for the whole batch, in milliseconds")
    predictions: list[Answer] = Field(description="One answer per image, in the order sent")


class Problem(BaseModel):
    detail: str = Field(description="What is wrong with the request and what to send instead")


class Health(BaseModel):
    status: str
    model: str
    backend: str
    pid: int = Field(description="The worker process that answered")


class Sample(BaseModel):
    index: int = Field(description="Index in the 10,000 test images")
    label: int
    name: str
    pixels: list[list[int]]


class Samples(BaseModel):
    images: list[Sample]
