{{ analysis_panel(var('sample_end_year')) }}
