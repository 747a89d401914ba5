// Holds the precompiled ATen header that every torch stage library reuses (src/CMakeLists.txt).
