"""The HTTP faces of a node: the OpenAI API (:9337) and the console API (:3131)."""
