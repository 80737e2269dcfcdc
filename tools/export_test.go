package tools

// RenderStatus exposes the status tool's text to the external tests.
var RenderStatus = statusText
