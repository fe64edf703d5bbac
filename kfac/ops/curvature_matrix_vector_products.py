"""curvature_matrix_vector_products (work in progress)."""
