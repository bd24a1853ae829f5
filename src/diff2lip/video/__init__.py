"""Video: streaming decode/encode and audio mux (``io``), face detection and tracking, crop and paste-back."""
