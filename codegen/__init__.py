"""mnv2-codegen: trained MobileNetV2 -> int8 -> memory-planned static C for microcontrollers."""
__version__ = "0.1.0"
