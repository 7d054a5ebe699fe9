"""Streamlit pages, listed explicitly in app.py (st.navigation)."""
