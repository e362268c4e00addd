{{ sample_funnel(var('sample_end_year')) }}
